"""Funnel recall on a hand-checked candidate log, and in a run's metrics."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sim.recall import funnel_recall

from conftest import read_json, read_log


def _frame() -> pl.DataFrame:
    rows = [  # request, source, arm, surface, rank, l2_value, true_value, passed_l1,
        #       objective, l1_value, l1_pcvr, l2_pcvr
        (1, "full_request", "control", "search", 0, 4.0, 1.0, True, "ocpm", 1.0, 0.1, 0.1),
        (1, "full_request", "control", "search", 1, 3.0, 2.0, False, "ocpm", 0.5, 0.1, 0.4),
        (1, "full_request", "control", "search", 2, 2.0, 3.0, True, "cpc", 1.5, 0.2, 0.9),
        (1, "full_request", "control", "search", 3, 1.0, 4.0, False, "cpm", 0.2, 0.2, 0.2),
        (2, "full_request", "control", "home_feed", 0, 1.0, 1.0, True, "cpm", 1.0, 0.1, 0.1),
        (3, "partial_request", "control", "search", 0, 9.0, 9.0, False, "cpm", 1.0, 0.1, 0.1),
        (4, "full_request", "treatment", "search", 0, 9.0, 9.0, False, "cpm", 1.0, 0.1, 0.1),
    ]
    cols = ["request_id", "source", "arm", "surface", "retrieval_rank", "l2_value", "true_value",
            "passed_l1", "objective", "l1_value", "l1_pcvr", "l2_pcvr"]
    return pl.DataFrame(rows, schema=cols, orient="row")


def test_funnel_recall_on_a_hand_checked_log() -> None:
    r = funnel_recall(_frame(), "control", n_slots=1, k_l1=2)
    assert r["retrieval_recall"] == pytest.approx(2 / 2)  # top-1 by L2 passed in both requests
    assert r["ranking_recall"] == pytest.approx(2 / 3)  # request 1: 1 of 2; request 2: 1 of 1
    assert r["oracle_retrieval_recall"] == pytest.approx(1 / 2)  # the truly best of request 1 lost
    assert r["oracle_ranking_recall"] == pytest.approx(2 / 3)
    assert r["by_surface"]["home_feed"]["ranking_recall"] == 1.0
    assert r["by_surface"]["search"]["oracle_retrieval_recall"] == 0.0
    assert funnel_recall(_frame(), "treatment", 1, 2)["ranking_recall"] == 0.0
    # with L2's pCVR, request 1's oCPM ad at rank 1 is worth 0.5 * 0.4 / 0.1 = 2.0 and passes with
    # the cpc ad (1.5; a cpc utility has no pCVR), pushing out L2's favourite (1.0)
    assert r["headroom_retrieval_recall"] == pytest.approx(1 / 2)
    assert r["headroom_ranking_recall"] == pytest.approx(2 / 3)


def _recall_by_hand(full: pl.DataFrame, value: str, cut: int) -> float:
    """Share of each request's top ``cut`` candidates by ``value`` (ties to the better retrieval
    rank) that passed L1, pooled over requests: one request at a time, in plain Python."""
    passed = total = 0
    for (_,), req in full.group_by(["request_id"]):
        ranked = sorted(zip(req[value].to_list(), req["retrieval_rank"].to_list(),
                            req["passed_l1"].to_list(), strict=True), key=lambda r: (-r[0], r[1]))
        top = ranked[:cut]
        passed += sum(r[2] for r in top)
        total += len(top)
    return passed / total


def test_a_run_reports_recall_per_arm_and_surface(tiny_run: Path) -> None:
    """The run's recalls are what a hand count over its full-request log gives, and the L1 cut
    in that log is the funnel's: every full request passes min(k_l1, live candidates)."""
    arm = read_json(tiny_run / "metrics.json")["arms"]["control"]
    full = read_log(tiny_run, "candidates").filter(
        (pl.col("arm") == "control") & (pl.col("source") == "full_request"))
    assert full.height > 0
    k_l1, n_slots = 16, 3  # tests/conftest.py TINY and the default auction
    per_request = full.group_by("request_id").agg(pl.len().alias("live"),
                                                  pl.col("passed_l1").sum().alias("passed"))
    assert (per_request["passed"] == per_request["live"].clip(upper_bound=k_l1)).all()
    assert arm["retrieval_recall"] == pytest.approx(_recall_by_hand(full, "l2_value", n_slots))
    assert arm["ranking_recall"] == pytest.approx(_recall_by_hand(full, "l2_value", k_l1))
    assert arm["oracle_retrieval_recall"] == pytest.approx(_recall_by_hand(full, "true_value", n_slots))
    assert arm["oracle_ranking_recall"] == pytest.approx(_recall_by_hand(full, "true_value", k_l1))
    for key in ("headroom_retrieval_recall", "headroom_ranking_recall"):
        assert 0.0 <= arm[key] <= 1.0, key
    assert set(arm["recall_by_surface"]) <= {"home_feed", "search", "shopping"}
