"""What advertisers pay, read from the logs after the run: the billed charge of each impression,
spend and CPA, CPA against each oCPM campaign's target, and the platform's revenue."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import polars as pl


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def money(imps: pl.DataFrame, convs: pl.DataFrame) -> dict[str, Any]:
    spend = float(imps["cost"].sum())
    conv = convs.filter(pl.col("attributed"))
    ocpm_spend = float(imps.filter(pl.col("objective") == "ocpm")["cost"].sum())
    ocpm_conv = conv.filter(pl.col("objective") == "ocpm").height
    return {"spend": spend, "conversions": conv.height, "cpa": _ratio(ocpm_spend, ocpm_conv),
            "cpa_all": _ratio(spend, conv.height), "ocpm_spend": ocpm_spend,
            "ocpm_conversions": ocpm_conv}


# an advertiser's CPA / target enters the distribution once its spend would buy this many
# conversions at its target (selected on what it paid, not on the outcome it got)
MIN_EXPECTED_CONVERSIONS = 5


def cpa_to_target(imps: pl.DataFrame, convs: pl.DataFrame,
                  campaigns: pl.DataFrame) -> dict[str, Any]:
    """What an oCPM advertiser watches: realised CPA over its target CPA.

    ``ocpm_cpa_to_target`` = sum of oCPM spend / sum of (attributed conversions x target CPA)
    over the arm's oCPM advertisers: the spend-weighted harmonic mean of each advertiser's
    CPA / target (1 = on target; an advertiser with spend and no conversion counts, as it
    should, without an infinite CPA). ``ocpm_cpa_to_target_quantiles``: p10 / p50 / p90 of the
    per-advertiser ratio over advertisers whose spend is at least ``MIN_EXPECTED_CONVERSIONS``
    target CPAs. The selection reads the spend, never the conversions: keeping advertisers with
    enough *realised* conversions would keep the lucky small ones and bias the ratio low (one
    exactly on target with 5 expected conversions would show a median of 0.83). An advertiser
    without a conversion has an infinite ratio and sorts last; a quantile that falls on one is
    ``None`` (``without_conversion`` counts them)."""
    targets = (campaigns.filter(pl.col("objective") == "ocpm").group_by("advertiser_id")
               .agg(pl.col("target_cpa").first()))
    conv = (convs.filter(pl.col("attributed") & (pl.col("objective") == "ocpm"))
            .group_by("advertiser_id").agg(pl.len().alias("conversions")))
    per = targets.join(conv, on="advertiser_id", how="left").fill_null(0).sort("advertiser_id")
    ocpm = imps.filter(pl.col("objective") == "ocpm")
    ids = per["advertiser_id"].to_numpy()
    n = int(max(ids.max(initial=-1), ocpm["advertiser_id"].to_numpy().max(initial=-1))) + 1
    # summed in log order with numpy: a polars group-by sum of floats varies in its last digit
    spend = np.bincount(ocpm["advertiser_id"].to_numpy(), weights=ocpm["cost"].to_numpy(),
                        minlength=n)
    per = per.with_columns(spend=pl.Series(spend[ids], dtype=pl.Float64))
    valued = float((per["conversions"] * per["target_cpa"]).sum())
    many = per.filter(pl.col("spend") >= MIN_EXPECTED_CONVERSIONS * pl.col("target_cpa"))
    with np.errstate(divide="ignore"):
        ratio = many["spend"].to_numpy() / (many["conversions"] * many["target_cpa"]).to_numpy()
    quant: dict[str, float | None] = {"p10": None, "p50": None, "p90": None}
    if ratio.size:  # the empirical quantile, no interpolation towards an infinite ratio
        for q in (10, 50, 90):
            v = float(np.quantile(ratio, q / 100, method="inverted_cdf"))
            quant[f"p{q}"] = v if np.isfinite(v) else None
    return {"ocpm_cpa_to_target": _ratio(float(per["spend"].sum()), valued),
            "ocpm_cpa_to_target_quantiles": {
                "advertisers": int(ratio.size),
                "without_conversion": int(np.isinf(ratio).sum()), **quant}}


def billed_costs(imps: pl.DataFrame, days: pl.DataFrame) -> pl.DataFrame:
    """``imps`` with ``cost`` the billed charge and ``delivered_cost`` the auction's.

    Budgets are checked once per tick, so the last tick of a capped advertiser's day can deliver
    past its budget; the platform bills at most the budget (``budget_days.billed``). Each
    impression's charge is scaled by its advertiser-day's ``billed / spend`` (1 within budget):
    the unbilled overspend is taken from all of that day's charges of that set of budgets in
    proportion, so under user-split neither arm gets the free impressions of the shared budget's
    last tick (the arms are served one after the other within a tick). Spend, CPA and every lift
    read the billed cost; the overspend itself is reported under ``overspend``."""
    if imps.height == 0:
        return imps.with_columns(delivered_cost=pl.col("cost"))
    shared = days["arm"].unique().to_list()
    key = pl.lit("shared") if "shared" in shared else pl.col("arm")
    factor = days.select(
        pl.col("day").cast(imps.schema["day"]), pl.col("arm").alias("_budgets"),
        pl.col("advertiser_id").cast(imps.schema["advertiser_id"]),
        pl.when(pl.col("spend") > 0).then(pl.col("billed") / pl.col("spend"))
        .otherwise(1.0).alias("_billed"))
    out = (imps.with_columns(_budgets=key)
           .join(factor, on=["day", "_budgets", "advertiser_id"], how="left", maintain_order="left"))
    missing = out["_billed"].null_count()
    if missing:
        raise ValueError(f"{missing} impressions have no budget_days row (day, budgets, advertiser)")
    return (out.with_columns(delivered_cost=pl.col("cost"), cost=pl.col("cost") * pl.col("_billed"))
            .drop("_budgets", "_billed"))


def _spend_by_key(imps: pl.DataFrame, n_adv: int, size: int) -> np.ndarray:
    """Spend per (day, advertiser) as a dense (size,) array, summed in log order (reproducible)."""
    key = imps["day"].to_numpy().astype(np.int64) * n_adv + imps["advertiser_id"].to_numpy()
    return np.bincount(key, weights=imps["cost"].to_numpy(), minlength=size)[:size]


def revenue(imps: pl.DataFrame, days: pl.DataFrame, arm: str) -> float:
    """What the platform bills for ``arm``: each advertiser-day's billed amount of the budgets the
    arm spends from, in proportion to the arm's share of the spend on them (all of it under
    budget-split; the arm's part of the shared budgets under user-split)."""
    own = days.filter(pl.col("arm").is_in([arm, "shared"]))
    if own.height == 0:
        return 0.0
    n_adv = int(cast(int, days["advertiser_id"].max())) + 1
    size = (int(cast(int, days["day"].max())) + 1) * n_adv
    spenders = imps if (own["arm"] == "shared").any() else imps.filter(pl.col("arm") == arm)
    total = _spend_by_key(spenders, n_adv, size)
    mine = _spend_by_key(imps.filter(pl.col("arm") == arm), n_adv, size)
    k = own["day"].to_numpy().astype(np.int64) * n_adv + own["advertiser_id"].to_numpy()
    billed = own["billed"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.where(total[k] > 0, billed * mine[k] / total[k], 0.0)
    return float(part.sum())
