"""Pinned log schemas, and files that appear under their final names only when complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sim.logs import SCHEMAS, LogWriter

from conftest import read_log

PINNED = {
    "requests": [
        "request_id", "time", "day", "arm", "user_id", "segment", "surface", "n_retrieved",
        "n_impressions", "query_tower_ms", "item_lookup_ms", "l2_ms", "query_tower_ok",
        "item_lookup_ok", "l2_ok"
    ],
    "impressions": [
        "request_id", "time", "day", "arm", "user_id", "surface", "ad_id", "advertiser_id",
        "objective", "position", "bid", "price", "per_click", "cost", "l1_pcvr", "l2_pctr",
        "l2_pcvr", "l2_fallback", "true_pctr", "true_pcvr", "click", "conversion", "tier", "item_version",
        "query_version"
    ],
    "clicks": [
        "request_id", "time", "day", "arm", "ad_id", "advertiser_id", "objective", "position",
        "cost", "l1_pcvr", "l2_pcvr", "l2_fallback", "true_pcvr", "conversion"
    ],
    "conversions": [
        "request_id", "click_time", "time", "day", "arm", "ad_id", "advertiser_id", "objective",
        "attributed", "observed"
    ],
    "candidates": [
        "request_id", "time", "day", "arm", "source", "surface", "ad_id", "advertiser_id",
        "objective", "retrieval_rank", "l1_pcvr", "ctr_prior", "l1_value", "l2_pctr", "l2_pcvr",
        "l2_value", "l2_fallback", "passed_l1", "passed_l2", "won", "true_pctr", "true_pcvr",
        "true_value", "tier", "item_version", "query_version"
    ],
    "campaigns": [
        "time", "day", "arm", "advertiser_id", "objective", "target_cpa", "max_cpc", "cpm_price",
        "budget", "nominal_share", "traffic_share"
    ],
    "spend": [
        "time", "day", "arm", "advertiser_id", "tick_spend", "spent_today", "budget"
    ],
    "pacing": [
        "time", "day", "day_share", "arm", "advertiser_id", "multiplier", "planned", "actual",
        "auctions",
        "cpa_multiplier", "matured_spend", "observed_conversions", "spent_today", "budget"
    ],
    "opening": [
        "time", "arm", "advertiser_id", "objective", "multiplier", "forecast_multiplier",
        "forecast_spend", "auctions", "budget", "requests", "rounds"
    ],
    "budget_days": [
        "day", "arm", "advertiser_id", "objective", "budget", "spend", "billed", "overspend",
        "max_tick_spend"
    ],
    "index_builds": [
        "time", "deploy_time", "arm", "tier", "mode", "snapshot_time", "n_items", "min_version",
        "max_version", "n_versions", "build_s"
    ],
    "snapshots": [
        "time", "arm", "n_items", "min_version", "max_version", "n_versions"
    ],
    "model_releases": [
        "time", "lineage", "kind", "family", "version", "window_start", "window_end", "rows",
        "train_loss", "epochs", "parameters", "feature_view", "holdout_rows", "holdout_log_mae",
        "holdout_log_loss", "positives", "late_positives"
    ],
    "rollouts": [
        "time", "arm", "lineage", "side", "version"
    ],
    "version_distance": [
        "hour", "arm", "tier", "distance", "candidates"
    ],
    "serving_path": [
        "time", "hour", "arm", "query_version", "requests", "exact", "recalled", "candidates",
        "abs_error", "error", "pcvr_served", "pcvr_exact", "true_pcvr"
    ],
    "offline_eval": [
        "model", "lineage", "version", "teacher", "source", "decile", "rows", "log_mae", "log_loss",
        "normalized_entropy", "calibration", "label_log_loss", "label_calibration"
    ],
    "skew_sweep": [
        "family", "lineage", "query_version", "distance", "source", "tier", "anchors", "rows",
        "log_loss", "excess_loss", "calibration", "log_mae", "logit_shift", "item_shift",
        "query_norm", "delta_excess_loss", "delta_log_mae"
    ],
    "training_rows": [
        "chunk", "logged_at", "time", "arm", "user", "surface", "ad_features", "ad_id", "source",
        "tier", "item_version", "query_version", "position", "click", "conversion_time",
        "true_pcvr", "l1_pcvr", "families"
    ],
    "feature_coverage": [
        "hour", "arm", "artifact", "family", "rows", "present"
    ],
    "feature_changes": [
        "time", "arm", "day", "changed_artifacts", "training_logs", "l2_feature_store",
        "l1_embedding"
    ],
    "parity_audit": [
        "arm", "family", "artifact", "offline_coverage", "online_coverage", "log_loss_increase",
        "log_mae_increase"
    ],
}
# empty in a run without registry changes; training_rows unless logs.training_rows
EVENT_TABLES = {"feature_changes", "parity_audit", "training_rows", "opening"}  # opening: forecast only


def test_declared_schemas_are_pinned() -> None:
    assert {t: list(s) for t, s in SCHEMAS.items()} == PINNED


@pytest.mark.parametrize("table", sorted(PINNED))
def test_run_writes_each_table_with_its_schema(tiny_run: Path, table: str) -> None:
    frame = read_log(tiny_run, table)
    assert frame.schema == pl.Schema(SCHEMAS[table])
    assert frame.height > 0 or table in EVENT_TABLES


def test_no_temporary_files_left(tiny_run: Path) -> None:
    leftovers = [p.name for p in tiny_run.rglob("*") if p.name.endswith(".tmp") or ".parts" in p.parts]
    assert leftovers == []


def test_writer_final_files_only_on_close(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, flush_rows=3)
    cols = {"time": np.arange(5.0), "arm": "control", "n_items": np.arange(5),
            "min_version": 1, "max_version": 2, "n_versions": 2}
    w.append("snapshots", cols)
    assert not (tmp_path / "snapshots.parquet").exists()  # flushed to a part, not final
    assert list((tmp_path / ".parts" / "snapshots").glob("*.parquet"))
    rows = w.close()
    assert rows["snapshots"] == 5
    frame = pl.read_parquet(tmp_path / "snapshots.parquet")
    assert frame["time"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not (tmp_path / ".parts").exists()
    assert pl.read_parquet(tmp_path / "clicks.parquet").height == 0  # empty table, full schema


def test_writer_rejects_wrong_columns(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, flush_rows=10)
    with pytest.raises(ValueError, match="missing columns"):
        w.append("snapshots", {"time": 1.0})


def test_truth_logged_beside_estimates(tiny_run: Path) -> None:
    imps = read_log(tiny_run, "impressions")
    for col in ("l1_pcvr", "l2_pctr", "l2_pcvr", "true_pctr", "true_pcvr"):
        assert imps[col].is_between(0, 1).all()
    # clicks are drawn from the true pCTR: the click rate matches its mean
    n = imps.height
    rate, mean = imps["click"].mean(), imps["true_pctr"].mean()
    assert abs(rate - mean) < 4 * np.sqrt(mean * (1 - mean) / n)
    cands = read_log(tiny_run, "candidates")
    assert set(cands["source"].unique()) == {"full_request", "partial_request"}
    # full-request samples hold every live retrieved candidate of their request
    full = cands.filter(pl.col("source") == "full_request")
    reqs = read_log(tiny_run, "requests").join(
        full.group_by("request_id").len(), on="request_id", how="inner")
    assert (reqs["len"] == reqs["n_retrieved"]).all()


def test_a_value_that_does_not_fit_its_column_is_an_error_not_a_null(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, 10)
    row = {c: 0 for c in SCHEMAS["snapshots"]} | {"arm": "control"}
    with pytest.raises(ValueError, match="`snapshots`, column `n_versions`"):
        w.append("snapshots", row | {"n_versions": np.array([2**40])})
    with pytest.raises(TypeError, match="column `n_items`"):
        w.append("snapshots", row | {"n_items": np.array([1.5])})
    w.append("snapshots", row | {"n_items": np.array([3.0])})  # integral: written as 3
    assert w.rows["snapshots"] == 1


def test_a_vector_column_round_trips_and_rejects_a_wrong_shape_or_type(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, flush_rows=4)
    n, width = 6, 5
    feats = np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)
    row = {c: 0 for c in SCHEMAS["training_rows"]} | {"ad_features": feats}
    for part in (slice(0, 2), slice(2, 6)):  # two appends, two parquet parts
        w.append("training_rows", row | {"chunk": np.arange(n)[part], "ad_features": feats[part]})
    with pytest.raises(ValueError, match="column `ad_features`: a vector column takes an"):
        w.append("training_rows", row | {"chunk": np.arange(3), "ad_features": feats[:2]})
    w.close()
    frame = pl.read_parquet(tmp_path / "training_rows.parquet")
    assert frame.schema == pl.Schema(SCHEMAS["training_rows"])
    assert np.array_equal(np.stack(frame["ad_features"].to_list()).astype(np.float32), feats)
    w = LogWriter(tmp_path / "f64", flush_rows=1)
    with pytest.raises(ValueError, match="float64 vectors"):
        w.append("training_rows", row | {"chunk": np.arange(n), "ad_features": feats.astype(float)})
