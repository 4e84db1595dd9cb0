"""The declared schema of every log table. A test pins these columns; change them knowingly.

Units: times in simulated seconds since the end of the warm-up, ``day`` = floor(time / 86400),
money in the world's currency, probabilities in [0, 1]. ``true_*`` columns are ground truth that
no model saw, logged beside the estimates (``l1_*``, ``l2_*``).
"""

from __future__ import annotations

import polars as pl

I64, I32, I16, F64, F32 = pl.Int64, pl.Int32, pl.Int16, pl.Float64, pl.Float32
STR, BOOL = pl.String, pl.Boolean

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    # One row per request.
    "requests": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "user_id": I64,
        "segment": I16, "surface": STR, "n_retrieved": I32, "n_impressions": I32,
    },
    # The auction-winner log source: one row per impression (every one, not sampled).
    "impressions": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "user_id": I64, "surface": STR,
        "ad_id": I64, "advertiser_id": I32, "objective": STR, "position": I16,
        "bid": F64, "price": F64, "per_click": BOOL, "cost": F64,
        "l1_pcvr": F32, "l2_pctr": F32, "l2_pcvr": F32, "true_pctr": F64, "true_pcvr": F64,
        "click": BOOL, "conversion": BOOL,
    },
    # One row per click; ``cost`` is the click charge (0 unless charged per click).
    "clicks": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "ad_id": I64,
        "advertiser_id": I32, "objective": STR, "position": I16, "cost": F64,
        "l1_pcvr": F32, "l2_pcvr": F32, "true_pcvr": F64, "conversion": BOOL,
    },
    # One row per conversion (drawn at click time). ``attributed``: within the attribution
    # window of the click, whether or not it lands before the end of the run; ``observed``: it
    # lands before the end of the run (what a live system would have seen by then).
    "conversions": {
        "request_id": I64, "click_time": F64, "time": F64, "day": I32, "arm": STR,
        "ad_id": I64, "advertiser_id": I32, "objective": STR, "attributed": BOOL,
        "observed": BOOL,
    },
    # Sampled candidates: ``source`` is ``full_request`` (every retrieved candidate of a sampled
    # request) or ``partial_request`` (a random subset of a sampled request's candidates).
    # L2 scores are computed for every logged candidate, also those L1 dropped.
    "candidates": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "source": STR, "surface": STR,
        "ad_id": I64, "advertiser_id": I32, "objective": STR, "retrieval_rank": I16,
        "l1_pcvr": F32, "ctr_prior": F32, "l1_value": F64, "l2_pctr": F32, "l2_pcvr": F32,
        "l2_value": F64, "passed_l1": BOOL, "passed_l2": BOOL, "won": BOOL,
        "true_pctr": F64, "true_pcvr": F64,
    },
    # Spend per advertiser per tick (only ticks with spend).
    "spend": {
        "time": F64, "day": I32, "arm": STR, "advertiser_id": I32, "tick_spend": F64,
        "spent_today": F64, "budget": F64,
    },
    # Every pacing update, per advertiser.
    "pacing": {
        "time": F64, "day": I32, "arm": STR, "advertiser_id": I32, "multiplier": F64,
        "planned": F64, "actual": F64, "spent_today": F64, "budget": F64,
    },
    # One row per advertiser and closed day: delivered spend, billed (capped at budget), overspend.
    "budget_days": {
        "day": I32, "arm": STR, "advertiser_id": I32, "objective": STR, "budget": F64,
        "spend": F64, "billed": F64, "overspend": F64, "max_tick_spend": F64,
    },
    # Index builds (snapshot of the live catalog, embedded with the live item tower).
    "index_builds": {
        "time": F64, "arm": STR, "n_items": I64, "model_version": I32, "build_s": F64,
    },
}
