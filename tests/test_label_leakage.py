"""Label leakage: a training pipeline that joins the offsite conversion counters at label time
(``features.label_join_share``, :mod:`sim.models.label_join`).

A converted row, so joined, counts its own conversion; releases, start-up training and the
offline evaluation read the joined rows, serving reads the counters as of the request, and the
report's ``label_leakage`` verdict compares the offline scores on the two views.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.lifecycle as lifecycle
from sim.config.schema import FEATURE_FAMILIES
from sim.features.registry import bits
from sim.models.label_join import LEAKING_FAMILY, join_draw, joined_rows, label_joined
from sim.models.training_log import WINNER, LoggedRows
from sim.report import verdicts as V

from conftest import run_tiny, tiny_config

COLS = slice(2, 6)  # four counter columns in a toy feature matrix of width 8


def _rows(n: int, seed: int = 0, families: frozenset[str] = frozenset(FEATURE_FAMILIES)) -> LoggedRows:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n, 4))
    feats = rng.normal(size=(n, 8)).astype(np.float32)
    feats[:, COLS] = np.log1p(counts).astype(np.float32)
    conv = np.where(rng.random(n) < 0.3, rng.uniform(0, 100, n), np.inf)
    return LoggedRows(
        time=rng.uniform(0, 50, n), arm=np.zeros(n, np.int8), user=rng.integers(0, 50, n),
        surface=rng.integers(0, 3, n).astype(np.int8), ad_features=feats,
        ad_id=rng.integers(0, 40, n), source=np.full(n, WINNER, np.int8), tier=np.zeros(n, np.int8),
        item_version=np.ones(n, np.int32), query_version=np.ones(n, np.int32),
        position=np.zeros(n, np.int16), click=np.isfinite(conv), conversion_time=conv,
        true_pcvr=np.full(n, 0.1), l1_pcvr=np.full(n, 0.1, np.float32),
        families=np.full(n, bits(families), np.uint8))


def test_a_joined_row_counts_its_own_conversion_and_nothing_else_moves() -> None:
    rows = _rows(2000)
    out = label_joined(rows, 60.0, 1.0, COLS)
    hit = rows.conversion_time <= 60.0
    assert hit.any() and (~hit).any()
    before = np.rint(np.expm1(rows.ad_features[:, COLS].astype(np.float64)))
    after = np.rint(np.expm1(out.ad_features[:, COLS].astype(np.float64)))
    np.testing.assert_array_equal(after[hit], before[hit] + 1)  # one more conversion, each window
    np.testing.assert_array_equal(out.ad_features[~hit], rows.ad_features[~hit])
    others = np.ones(8, bool)
    others[COLS] = False
    np.testing.assert_array_equal(out.ad_features[:, others], rows.ad_features[:, others])
    for f in dataclasses.fields(LoggedRows):  # labels, times, ids: all as logged
        if f.name != "ad_features":
            assert getattr(out, f.name) is getattr(rows, f.name)


def test_nothing_is_joined_without_a_share_a_label_or_the_family() -> None:
    rows = _rows(500)
    assert label_joined(rows, 60.0, 0.0, COLS) is rows
    assert label_joined(rows, -1.0, 1.0, COLS) is rows  # no conversion known yet
    unlogged = _rows(500, families=frozenset(FEATURE_FAMILIES) - {LEAKING_FAMILY})
    assert label_joined(unlogged, 1e9, 1.0, COLS) is unlogged  # a zero-filled family stays zero


@settings(max_examples=30, deadline=None)
@given(share=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_a_share_joins_that_share_of_the_known_conversions_the_same_way_every_time(
        share: float, seed: int) -> None:
    rows = _rows(4000, seed)
    for known_at in (60.0, math.inf):  # inf: every conversion that will ever arrive
        known = np.isfinite(rows.conversion_time) & (rows.conversion_time <= known_at)
        hit = joined_rows(rows, known_at, share)
        assert not (hit & ~known).any()  # never a row that has not converted by then
        n = int(known.sum())
        assert 0 < n < len(rows)
        assert abs(hit.sum() - share * n) <= 4 * math.sqrt(n * share * (1 - share)) + 1
        np.testing.assert_array_equal(hit, joined_rows(rows, known_at, share))  # a hash
        assert not (joined_rows(rows, known_at, share / 2) & ~hit).any()  # nested in the share
    u = join_draw(rows)
    assert ((u >= 0) & (u < 1)).all()


def _leakage(m: dict[str, Any]) -> V.Verdict:
    return next(v for v in V.verdicts(m) if v.key == "label_leakage")


def _model(logged: float, pit: float | None) -> dict[str, Any]:
    src = {"auction_winner": {"overall": {"label_log_loss": logged, "log_mae": 0.3}}}
    out: dict[str, Any] = {"sources": src}
    if pit is not None:
        out["point_in_time"] = {"sources": {"auction_winner": {
            "overall": {"label_log_loss": pit, "log_mae": 0.4}}}}
    return out


def test_the_verdict_reads_the_loss_the_joined_features_took_off() -> None:
    def m(models: dict[str, Any]) -> dict[str, Any]:
        return {"arms": {}, "offline": {"models": models}}
    v = _leakage(m({"control": _model(0.5, None),
                    "treatment": _model(0.5, 0.5 * (1 + 1.1 * V.LEAK_CREDIT))}))
    assert v.status == V.CAUSE and v.arms == ("treatment",), v
    v = _leakage(m({"control": _model(0.5, None),
                    "treatment": _model(0.5, 0.5 * (1 + 0.9 * V.LEAK_CREDIT))}))
    assert v.status == V.RULED_OUT, v  # the near miss: just under the rule's credit
    v = _leakage(m({"control": _model(0.5, None)}))
    assert v.status == V.RULED_OUT and "as of each request" in v.finding
    assert _leakage({"arms": {}}).status == V.NOT_MEASURABLE


def test_a_tiny_world_trains_on_joined_rows_and_serves_point_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every release fits on the rows its pipeline joined at the release time; the offline
    evaluation scores the arm on its joined view and on the point-in-time rows, and the verdict
    reads the two."""
    seen: list[tuple[float, LoggedRows, LoggedRows]] = []
    fitted: list[LoggedRows] = []
    join, fit = lifecycle.pipeline_rows, lifecycle.fit_l2

    def spy_join(rows: LoggedRows, known_at: float, cfg: Any) -> LoggedRows:
        out = join(rows, known_at, cfg)
        seen.append((known_at, rows, out))
        return out

    def spy_fit(model: Any, rows: LoggedRows, *args: Any, **kwargs: Any) -> Any:
        fitted.append(rows)
        return fit(model, rows, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "pipeline_rows", spy_join)
    monkeypatch.setattr(lifecycle, "fit_l2", spy_fit)
    m = run_tiny(tmp_path, "features.label_join_share=1.0")
    training = [(t, raw, out) for t, raw, out in seen if len(raw) > 0][::2]  # rows, then holdout
    assert len(training) == len(fitted) >= 2
    for (t, raw, out), rows in zip(training, fitted, strict=True):
        assert rows is out
        hit = raw.converted_by(t)
        assert hit.any()
        changed = (out.ad_features != raw.ad_features).any(axis=1)
        np.testing.assert_array_equal(changed, hit)  # every known conversion, nothing else
    model = m["offline"]["models"]["control"]
    pit = model["point_in_time"]["sources"]["auction_winner"]["overall"]
    logged = model["sources"]["auction_winner"]["overall"]
    assert pit["rows"] == logged["rows"] and pit["label_log_loss"] != logged["label_log_loss"]
    assert _leakage(m).finding.startswith("control:")


def test_the_parity_switch_leaves_the_leak_alone() -> None:
    """Attribution's parity-gap switch onboards every family; it must not reset the join."""
    from sim.report.attribution import HAZARDS
    cfg = tiny_config("features.label_join_share=0.5",
                      "features.onboarding.offsite_conversions=[training_logs,l2_feature_store]")
    off = HAZARDS["parity_gap"][1](cfg)
    assert off.features.label_join_share == 0.5
    assert off.features.onboarding[LEAKING_FAMILY] == ["training_logs", "l2_feature_store",
                                                       "l1_embedding"]
    assert HAZARDS["label_leakage"][1](cfg).features.label_join_share == 0.0


def test_an_arm_joined_without_labels_to_read_is_not_measurable() -> None:
    m = {"arms": {}, "offline": {"models": {"control": _model(0.5, None)}}}
    m["offline"]["models"]["treatment"] = {
        "sources": {"auction_winner": {"overall": {"label_log_loss": None, "log_mae": 0.3}}},
        "point_in_time": {"sources": {"auction_winner": {"overall": {"label_log_loss": None}}}}}
    assert _leakage(m).status == V.NOT_MEASURABLE
