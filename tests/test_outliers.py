"""Outlier domination: how much of an offline win the largest-loss rows carry
(:func:`sim.scoring.win_concentration`, ``offline.models.treatment.concentration``, the report's
``outlier_domination`` verdict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.report import verdicts as V
from sim.scoring import log_mae, row_log_error, win_concentration

from conftest import run_tiny


def test_a_win_carried_by_one_row_is_gone_without_it() -> None:
    c = np.ones(1000)
    t = np.ones(1000)
    c[17] = 1000.0  # one row the control gets badly wrong, the treatment right
    t[17] = 0.0
    out = win_concentration(c, t, 0.01)
    assert out["win"] == pytest.approx(1000 / 1999)
    assert out["win_trimmed"] == pytest.approx(0.0)
    assert out["top_share"] == pytest.approx(1.0)


def test_a_uniform_win_survives_the_trim() -> None:
    c = np.random.default_rng(0).gamma(2.0, size=5000)
    out = win_concentration(c, 0.9 * c, 0.01)
    assert out["win"] == pytest.approx(0.1) and out["win_trimmed"] == pytest.approx(0.1)
    assert out["top_share"] < 0.1  # the rows that gain most are the largest-loss ones, 1% of rows


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), trim=st.floats(0.001, 0.2))
def test_the_read_out_is_scale_free_and_the_win_is_log_maes(seed: int, scale: float,
                                                            trim: float) -> None:
    rng = np.random.default_rng(seed)
    p, q, teacher = (rng.uniform(0.001, 0.5, 300) for _ in range(3))
    c, t = row_log_error(p, teacher), row_log_error(q, teacher)
    out = win_concentration(c, t, trim)
    assert out["win"] == pytest.approx(1 - log_mae(q, teacher) / log_mae(p, teacher))
    again = win_concentration(scale * c, scale * t, trim)
    for k in ("win", "win_trimmed", "top_share"):
        assert again[k] == pytest.approx(out[k], rel=1e-9, abs=1e-12)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="trim"):
        win_concentration(np.ones(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="equal"):
        win_concentration(np.ones(3), np.ones(4), 0.1)


def _metrics(win: float, kept: float) -> dict[str, Any]:
    conc = {"auction_winner": {"win": win, "win_trimmed": kept, "top_share": 0.5, "trim": 0.01,
                               "rows": 1000}}
    return {"arms": {"control": {}, "treatment": {}},
            "offline": {"models": {"control": {}, "treatment": {"concentration": conc}}}}


def _verdict(m: dict[str, Any]) -> V.Verdict:
    return V.outlier_domination(m)


def test_the_verdict_names_a_win_the_trim_halves() -> None:
    assert _verdict(_metrics(0.10, 0.049)).status == V.CAUSE
    assert _verdict(_metrics(0.10, 0.051)).status == V.RULED_OUT  # half survives
    assert _verdict(_metrics(0.04, 0.0)).status == V.RULED_OUT  # no offline win to carry
    assert _verdict({"arms": {"control": {}}}).status == V.NOT_MEASURABLE


def test_a_tiny_two_arm_world_reads_its_win_row_by_row(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, "experiment.arms=[control,treatment]", "models.l1_hidden=32",
                 "experiment.treatment.models.l1_hidden=64")
    models = m["offline"]["models"]
    conc = models["treatment"]["concentration"]
    assert "concentration" not in models["control"]
    for source, c in conc.items():
        ctrl = models["control"]["sources"][source]["overall"]["log_mae"]
        treat = models["treatment"]["sources"][source]["overall"]["log_mae"]
        assert c["win"] == pytest.approx(1 - treat / ctrl, rel=1e-6)  # the report's win, per row
        assert c["rows"] == models["control"]["sources"][source]["overall"]["rows"]
    assert _verdict(m).status in (V.CAUSE, V.RULED_OUT)
