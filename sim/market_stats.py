"""A marketplace's statistics, from the logs of a run (or of a real marketplace in the same shape).

These are the numbers a world is fitted to (``python -m sim.calibrate``) and the fidelity report
compares. Each is defined on a few columns of a few logs, so a team can compute the same on its
own logs (the schema of each log: :mod:`sim.logs.schema`):

* ``ctr``: clicks / impressions (impressions: ``click``);
* ``cvr``: attributed conversions / clicks (impressions: ``click``; conversions: ``attributed``);
* ``conversions_per_impr``: attributed conversions / impressions (the same);
* ``delay_within_1h``, ``_24h``, ``_7d``, ``_30d``: the share of attributed conversions at most
  1 hour (24 hours, 7 days, 30 days) after their click (conversions: ``click_time``, ``time``,
  ``attributed``): of the delay's CDF F, ``F(t) / F(W)`` for the attribution window W (1 at
  and past it);
* ``hour_share_<h>``: the share of the requests in hour ``h`` of the day (0-23), over whole days,
  time 0 being midnight (requests: ``time``); ``peak_to_trough``: the busiest hour's share over
  the quietest's; ``quietest_six_hours``: the smallest share of the day in six consecutive hours
  (wrapping midnight);
* ``budget_target_corr``: the correlation of log daily budget with log target CPA over the oCPM
  campaigns as first set, one row per advertiser (under budget-split, the first arm's set of
  budgets; campaigns: ``objective``, ``target_cpa``, ``budget``, ``time``, ``arm``,
  ``advertiser_id``);
* ``position_ctr_<k>``: CTR at slot ``k`` over CTR at the top slot, k = 1, 2 (impressions:
  ``position``, ``click``);
* ``budget_exhausted``: the share of advertiser-days spending at least 95% of their budget, each
  set of budgets apart (under budget-split, each arm's sub-budget is a day of its own; a run's
  last day counts when it closes: budget_days: ``spend``, ``budget``).

Times are seconds from the start of the log; a day is 86,400 s. A run's logs hold the arms of an
experiment together: the statistics are of the marketplace, every arm pooled. The delay shares
use every attributed conversion (the simulator draws each at click time, so none is censored by
the end of the run); on a real log, use clicks old enough for the attribution window to have
closed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

DAY_S, HOUR_S = 86_400.0, 3_600.0
EXHAUSTED = 0.95  # an advertiser-day spending this share of its budget has exhausted it
LOGS = ("impressions", "conversions", "requests", "campaigns", "budget_days")
# the delay statistics and the delay each reads: the share of attributed conversions within it
DELAY_SHARES = {"delay_within_1h": HOUR_S, "delay_within_24h": DAY_S,
                "delay_within_7d": 7 * DAY_S, "delay_within_30d": 30 * DAY_S}


# every statistic :func:`statistics` returns
KNOWN = ("ctr", "cvr", "conversions_per_impr", *DELAY_SHARES, *(f"hour_share_{h}" for h in range(24)),
         "peak_to_trough", "quietest_six_hours", "budget_target_corr", "position_ctr_1",
         "position_ctr_2", "budget_exhausted")


def read_logs(run_dir: Path) -> dict[str, pl.DataFrame]:
    """The logs :func:`statistics` reads, from ``run_dir/logs``."""
    return {n: pl.read_parquet(run_dir / "logs" / f"{n}.parquet") for n in LOGS}


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def hourly_shares(requests: pl.DataFrame) -> np.ndarray | None:
    """(24,) share of the requests in each hour of the day, over whole days (None if the log
    spans less than one; a log whose last request is within 1% of a day of the day's end counts
    that day as whole)."""
    t = requests["time"].to_numpy()
    if t.size == 0:
        return None
    days = int(np.floor(t.max() / DAY_S + 0.01))  # a log that ends within 15 minutes of a day
    whole = t[t < days * DAY_S]
    if days < 1 or whole.size == 0:
        return None
    counts = np.bincount((np.mod(whole, DAY_S) // HOUR_S).astype(np.int64), minlength=24)[:24]
    return counts / counts.sum()


def statistics(logs: dict[str, pl.DataFrame]) -> dict[str, float | None]:
    """Every statistic of the module docstring's table (None where its logs cannot define it)."""
    imp, conv = logs["impressions"], logs["conversions"]
    attributed = conv.filter(pl.col("attributed"))
    clicks = int(imp["click"].sum())
    out: dict[str, float | None] = {
        "ctr": _ratio(clicks, imp.height),
        "cvr": _ratio(attributed.height, clicks),
        "conversions_per_impr": _ratio(attributed.height, imp.height),
    }
    delay = (attributed["time"] - attributed["click_time"]).to_numpy()
    for name, limit in DELAY_SHARES.items():
        out[name] = float(np.mean(delay <= limit)) if delay.size else None
    shares = hourly_shares(logs["requests"])
    for h in range(24):
        out[f"hour_share_{h}"] = None if shares is None else float(shares[h])
    if shares is not None:
        out["peak_to_trough"] = _ratio(shares.max(), shares.min())
        wrapped = np.concatenate([shares, shares[:5]])
        out["quietest_six_hours"] = float(min(wrapped[i:i + 6].sum() for i in range(24)))
    else:
        out["peak_to_trough"] = out["quietest_six_hours"] = None
    first = (logs["campaigns"].filter(pl.col("objective") == "ocpm")
             .sort(["time", "arm"], maintain_order=True)  # one set of budgets per advertiser
             .group_by("advertiser_id", maintain_order=True).first())
    ok = first.filter((pl.col("budget") > 0) & (pl.col("target_cpa") > 0))
    out["budget_target_corr"] = (
        float(np.corrcoef(np.log(ok["budget"].to_numpy()), np.log(ok["target_cpa"].to_numpy()))[0, 1])
        if ok.height >= 3 and ok["budget"].n_unique() > 1 and ok["target_cpa"].n_unique() > 1
        else None)
    by_pos = imp.group_by("position").agg(pl.col("click").mean().alias("ctr")).sort("position")
    ctr_at = dict(zip(by_pos["position"].to_list(), by_pos["ctr"].to_list(), strict=True))
    for k in (1, 2):
        top, at = ctr_at.get(0), ctr_at.get(k)
        out[f"position_ctr_{k}"] = None if top is None or at is None else _ratio(at, top)
    days = logs["budget_days"].filter(pl.col("budget") > 0)
    out["budget_exhausted"] = (float(np.mean(days["spend"].to_numpy()
                                             >= EXHAUSTED * days["budget"].to_numpy()))
                               if days.height else None)
    return out
