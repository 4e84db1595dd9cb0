"""How budgets were delivered along the day, from the ``pacing`` and ``budget_days`` logs.

The pacing targets a budget-bound advertiser should meet (:mod:`sim.pacing`): its spent share of
the budget follows the share of the day's traffic seen so far, and it does not reach its budget
in the morning. For each closed day (the last one may be partial, when ``days`` is fractional, and is read
against its full budget) and objective, over the advertisers with a budget whose spend reached
``BOUND`` of it that day (each set of budgets counted on its own: an arm's sub-campaign
under budget-split):

* ``mean_gap``: the mean over advertisers of the mean over the day's pacing updates of
  ``|spent_today / budget - day_share|``;
* ``early_share``: the share of them that reached ``BOUND`` of their budget before ``EARLY`` of
  the day's traffic.
"""

from __future__ import annotations

from typing import Any

import polars as pl

BOUND = 0.95  # budget-bound: spent at least this share of the day's budget
EARLY = 0.75  # ... and early if that happened before this share of the day's traffic
OBJECTIVES = ("ocpm", "cpc", "cpm")


def pacing_tracking(pace: pl.DataFrame, days: pl.DataFrame) -> list[dict[str, Any]]:
    """One entry per closed day: ``day`` and, for ``all`` and each objective, ``advertisers``
    (budget-bound), ``mean_gap`` and ``early_share`` (None without a budget-bound advertiser)."""
    bound = (days.filter((pl.col("budget") > 0) & (pl.col("spend") >= BOUND * pl.col("budget")))
             .select("day", "arm", "advertiser_id", "objective"))
    per = (pace.join(bound, on=["day", "arm", "advertiser_id"], maintain_order="left")
           .with_columns(frac=pl.col("spent_today") / pl.col("budget"))
           .group_by("day", "arm", "advertiser_id", "objective")
           .agg(gap=(pl.col("frac") - pl.col("day_share")).abs().mean(),
                reached=pl.col("day_share").filter(pl.col("frac") >= BOUND).min())
           .with_columns(early=pl.col("reached").fill_null(1.0) < EARLY)
           .sort("day", "arm", "advertiser_id"))  # group_by order varies: sort for exact means
    out = []
    for day in sorted(days["day"].unique().to_list()):
        entry: dict[str, Any] = {"day": int(day)}
        d = per.filter(pl.col("day") == day)
        for name in ("all", *OBJECTIVES):
            g = d if name == "all" else d.filter(pl.col("objective") == name)
            entry[name] = {"advertisers": g.height,
                           "mean_gap": float(g["gap"].mean()) if g.height else None,  # type: ignore[arg-type]
                           "early_share": float(g["early"].mean()) if g.height else None}  # type: ignore[arg-type]
        out.append(entry)
    return out
