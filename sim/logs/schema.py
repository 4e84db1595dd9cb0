"""The declared schema of every log table. A test pins these columns; change them knowingly.

Units: times in simulated seconds since the end of the warm-up, ``day`` = floor(time / 86400),
money in the world's currency, probabilities in [0, 1]. ``true_*`` columns are ground truth that
no model saw, logged beside the estimates (``l1_*``, ``l2_*``).
"""

from __future__ import annotations

import polars as pl

I64, I32, I16, I8, U8 = pl.Int64(), pl.Int32(), pl.Int16(), pl.Int8(), pl.UInt8()
F64, F32, STR, BOOL = pl.Float64(), pl.Float32(), pl.String(), pl.Boolean()
F32_LIST = pl.List(pl.Float32())  # a fixed-width float32 vector per row (written from (n, F))

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    # One row per request, with each serving stage's latency (ms) and whether it met its SLA.
    "requests": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "user_id": I64,
        "segment": I16, "surface": STR, "n_retrieved": I32, "n_impressions": I32,
        "query_tower_ms": F32, "item_lookup_ms": F32, "l2_ms": F32, "query_tower_ok": BOOL,
        "item_lookup_ok": BOOL, "l2_ok": BOOL,
    },
    # The auction-winner log source: one row per impression (every one, not sampled). ``price``
    # is what the winner is charged per billing event (per click when ``per_click``, else per
    # impression, for what its slot delivers); ``l2_fallback``: L2 timed out on the request, so
    # ``l2_pctr``/``l2_pcvr`` hold L1's estimates and the row is no teacher label.
    "impressions": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "user_id": I64, "surface": STR,
        "ad_id": I64, "advertiser_id": I32, "objective": STR, "position": I16,
        "bid": F64, "price": F64, "per_click": BOOL, "cost": F64,
        "l1_pcvr": F32, "l2_pctr": F32, "l2_pcvr": F32, "l2_fallback": BOOL, "true_pctr": F64,
        "true_pcvr": F64, "click": BOOL, "conversion": BOOL, "tier": STR, "item_version": I32,
        "query_version": I32,
    },
    # One row per click; ``cost`` is the click charge (0 unless charged per click).
    "clicks": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "ad_id": I64,
        "advertiser_id": I32, "objective": STR, "position": I16, "cost": F64,
        "l1_pcvr": F32, "l2_pcvr": F32, "l2_fallback": BOOL, "true_pcvr": F64, "conversion": BOOL,
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
    # L2 scores are computed for every logged candidate, also those L1 dropped (the real L2, also
    # where the request's L2 stage timed out: ``l2_fallback``, when L1's estimates ranked it).
    "candidates": {
        "request_id": I64, "time": F64, "day": I32, "arm": STR, "source": STR, "surface": STR,
        "ad_id": I64, "advertiser_id": I32, "objective": STR, "retrieval_rank": I16,
        "l1_pcvr": F32, "ctr_prior": F32, "l1_value": F64, "l2_pctr": F32, "l2_pcvr": F32,
        "l2_value": F64, "l2_fallback": BOOL, "passed_l1": BOOL, "passed_l2": BOOL, "won": BOOL,
        "true_pctr": F64, "true_pcvr": F64, "true_value": F64, "tier": STR, "item_version": I32,
        "query_version": I32,
    },
    # The campaigns as run: one row per set of budgets (the arm under budget-split, ``shared``
    # under user-split, ``control`` without an experiment) and advertiser each time they are set:
    # at the start of every day and at a ramp step within a day. The objective and its parameter
    # (``target_cpa`` for ocpm, ``max_cpc`` for cpc, ``cpm_price`` per mille for cpm; for
    # the other objectives: NaN) and the budget from then on; the arm's nominal share of the
    # users and the share of the traffic they bring, which budget-split sub-budgets follow (1 for
    # shared or single-arm budgets).
    "campaigns": {
        "time": F64, "day": I32, "arm": STR, "advertiser_id": I32, "objective": STR, "target_cpa": F64,
        "max_cpc": F64, "cpm_price": F64, "budget": F64, "nominal_share": F64,
        "traffic_share": F64,
    },
    # Spend per advertiser per tick (only ticks with spend).
    "spend": {
        "time": F64, "day": I32, "arm": STR, "advertiser_id": I32, "tick_spend": F64,
        "spent_today": F64, "budget": F64,
    },
    # Every pacing update, per advertiser, with the share of the day's expected traffic arrived by
    # then (1 at the day's end): the controller's output (a bid multiplier, or a
    # throttled fixed-price advertiser's participation rate), the interval's plan, spend and
    # auctions taken part in; with the oCPM autobidder on, an oCPM campaign's CPA multiplier and
    # what it read (the window's matured spend and arrived conversions; NaN where it does not run).
    "pacing": {
        "time": F64, "day": I32, "day_share": F64, "arm": STR, "advertiser_id": I32,
        "multiplier": F64, "planned": F64, "actual": F64, "auctions": F64, "cpa_multiplier": F64,
        "matured_spend": F64, "observed_conversions": F64, "spent_today": F64, "budget": F64,
    },
    # One row per set of budgets and advertiser, with ``pacing.opening=forecast`` and pacing on
    # (sim.opening), at time 0 and, for a budget-split arm a ramp holds at 0, at the first
    # traffic after the step that funds it: the multiplier (or participation rate) it starts at,
    # and the forecast's last round: the multiplier it served, its spend over the rest of the
    # day at it (what the platform expected to charge) and the auctions taken part in, in the
    # sample, beside the budget it planned for (what was left of the day's). The day's realised
    # spend is in ``budget_days``.
    "opening": {
        "time": F64, "arm": STR, "advertiser_id": I32, "objective": STR, "multiplier": F64,
        "forecast_multiplier": F64, "forecast_spend": F64, "auctions": F64, "budget": F64,
        "requests": I64, "rounds": I32,
    },
    # One row per advertiser and closed day: delivered spend, billed (capped at budget), overspend.
    "budget_days": {
        "day": I32, "arm": STR, "advertiser_id": I32, "objective": STR, "budget": F64,
        "spend": F64, "billed": F64, "overspend": F64, "max_tick_spend": F64,
    },
    # Index tier builds: started at ``time`` from the snapshot of ``snapshot_time``, swapped in at
    # ``deploy_time``; the model versions of the item vectors it holds.
    "index_builds": {
        "time": F64, "deploy_time": F64, "arm": STR, "tier": STR, "mode": STR,
        "snapshot_time": F64, "n_items": I64, "min_version": I32, "max_version": I32,
        "n_versions": I32, "build_s": F64,
    },
    # Embedding-table snapshots.
    "snapshots": {
        "time": F64, "arm": STR, "n_items": I64, "min_version": I32, "max_version": I32,
        "n_versions": I32,
    },
    # Every registered model version (version 1 is the start-up model, at time 0). L1 releases
    # are scored on the rows logged after their training window (``holdout_*``; NaN for L2).
    "model_releases": {
        "time": F64, "lineage": STR, "kind": STR, "family": STR, "version": I32,
        "window_start": F64, "window_end": F64, "rows": I64, "train_loss": F64, "epochs": I32,
        "parameters": I64, "feature_view": STR, "holdout_rows": I64, "holdout_log_mae": F64,
        "holdout_log_loss": F64, "positives": I64, "late_positives": I64,
    },
    # When a version went live on a side of an arm: ``item`` (enrichment and batch builds use
    # it from then on) or ``query`` (the query tower serving requests).
    "rollouts": {"time": F64, "arm": STR, "lineage": STR, "side": STR, "version": I32},
    # Live retrieved candidates (what L1 scored) per hour, tier and query-minus-item version.
    "version_distance": {
        "hour": I32, "arm": STR, "tier": STR, "distance": I32, "candidates": I64,
    },
    # The serving-path probe (sim.serving.probe), one row per tick and arm: the first requests of
    # the arm's batch run down the served path and the exact fp32 offline path. ``exact``: entries
    # of the exact top-k_retrieval, ``recalled``: of those, returned by the served search;
    # ``candidates``: served candidates, ``abs_error``/``error``: sums of |served - fp32| and of
    # served - fp32 L1 logit over them; ``pcvr_served``/``pcvr_exact``/``true_pcvr``: sums over
    # the live served candidates of L1's pCVR from each logit and of the true pCVR.
    "serving_path": {
        "time": F64, "hour": I32, "arm": STR, "query_version": I32, "requests": I32,
        "exact": I64, "recalled": I64, "candidates": I64, "abs_error": F64, "error": F64,
        "pcvr_served": F64, "pcvr_exact": F64, "true_pcvr": F64,
    },
    # Offline evaluation in the clean world (one checkpoint for both towers), per log source and
    # decile of the L2 teacher's pCVR (decile -1 = all rows); ``teacher`` is the L2 lineage the
    # model is scored against (its own arm's).
    "offline_eval": {
        "model": STR, "lineage": STR, "version": I32, "teacher": STR, "source": STR, "decile": I32,
        "rows": I64,
        "log_mae": F64, "log_loss": F64, "normalized_entropy": F64, "calibration": F64,
        "label_log_loss": F64, "label_calibration": F64,
    },
    # The skew sweep: query tower of version a, item tower of a - ``distance``, averaged over the
    # anchors a; ``delta_*`` is the mean change against the clean pairing (a, a); ``logit_shift``
    # the mean |change of the L1 logit| from it, ``item_shift`` the relative move of the item
    # vectors, ``query_norm`` the mean query-vector length (sim.evaluation.skew_sweep).
    "skew_sweep": {
        "family": STR, "lineage": STR, "query_version": I32, "distance": I32, "source": STR,
        "tier": STR, "anchors": I32, "rows": I64, "log_loss": F64, "excess_loss": F64,
        "calibration": F64, "log_mae": F64, "logit_shift": F64, "item_shift": F64,
        "query_norm": F64, "delta_excess_loss": F64, "delta_log_mae": F64,
    },
    # The training logs as releases read them (``logs.training_rows: true``; empty otherwise):
    # every chunk the data plane appended to the in-memory training log, whole (where the log
    # thinned past its cap, metrics ``training_log_keep`` < 1, it kept that share of the
    # unclicked ones, and the replay thins them alike) (one per served batch and
    # arm, ``chunk`` in append order, ``logged_at`` the tick it was appended at) with the fields of
    # :class:`sim.models.training_log.LoggedRows` under their names (``arm`` is the arm's index,
    # ``surface``/``source``/``tier`` codes, ``ad_features`` the features as logged,
    # ``conversion_time`` inf when none). ``python -m sim.readiness`` replays a run's releases
    # from them.
    "training_rows": {
        "chunk": I64, "logged_at": F64, "time": F64, "arm": I8, "user": I64, "surface": I8,
        "ad_features": F32_LIST, "ad_id": I64, "source": I8, "tier": I8, "item_version": I32,
        "query_version": I32, "position": I16, "click": BOOL, "conversion_time": F64,
        "true_pcvr": F64, "l1_pcvr": F32, "families": U8,
    },
    # Feature coverage per hour: of the rows an artifact served (``l1_embedding``: live retrieved
    # candidates; ``l2_feature_store``: L2-scored candidates; ``training_logs``: logged training
    # rows), how many had the family present (sim.features.coverage).
    "feature_coverage": {
        "hour": I32, "arm": STR, "artifact": STR, "family": STR, "rows": I64, "present": I64,
    },
    # Scheduled feature-registry changes as applied, and each artifact's families after them.
    "feature_changes": {
        "time": F64, "arm": STR, "day": F64, "changed_artifacts": STR, "training_logs": STR,
        "l2_feature_store": STR, "l1_embedding": STR,
    },
    # The parity audit: families present offline but missing in an online artifact, with their
    # importance (offline loss increase when zero-filled) to the arm's live L1.
    "parity_audit": {
        "arm": STR, "family": STR, "artifact": STR, "offline_coverage": F64,
        "online_coverage": F64, "log_loss_increase": F64, "log_mae_increase": F64,
    },
}
