"""Replicates as a run (``python -m sim replicates=N``) and the cross-seed report of a sweep
(``sim.report.replicates``): counts that match the per-seed reports, means and t-intervals of the
per-seed values, and paired differences where groups share seeds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from scipy import stats

from sim.config import ConfigError
from sim.config.store import expand_replicates
from sim.report.__main__ import main as report_main
from sim.report.run_report import make_report
from sim.report.verdicts import RULES
from sim.threads import blas_mode, machine_cores

from conftest import TINY, read_json

SEEDS = 3


def test_replicates_is_a_sweep_over_seeds() -> None:
    assert expand_replicates(["scenario=baseline", "replicates=4"]) == [
        "-m", "scenario=baseline", "seed=range(0,4)"]
    assert expand_replicates(["-m", "replicates=2", "funnel.k_l1=25,50"]) == [
        "-m", "funnel.k_l1=25,50", "seed=range(0,2)"]
    assert expand_replicates(["days=1"]) == ["days=1"]
    for bad, match in ((["replicates=0"], "whole number >= 1, got '0'"),
                       (["replicates=two"], "got 'two'"),
                       (["replicates=3", "seed=5"], "drop 'seed=5'"),
                       (["replicates=3", "replicates=4"], "given 2 times")):
        with pytest.raises(ConfigError, match=match):
            expand_replicates(bad)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-arm world at seeds 0, 1, 2 by ``replicates=3``, reported."""
    d = tmp_path_factory.mktemp("replicates")
    out = subprocess.run([sys.executable, "-m", "sim", f"replicates={SEEDS}", *TINY, "days=0.05",
                          "experiment.arms=[control,treatment]", f"hydra.sweep.dir={d}",
                          "hydra.launcher.n_jobs=2", "threads.torch=auto", "threads.faiss=auto"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert report_main([str(d)]) == 0
    return d


def test_the_sweep_ran_on_joblib_with_one_thread_per_job(sweep: Path) -> None:
    """``-m`` runs on joblib by default; two jobs at a time share the cores (``threads=auto``);
    ``python -m sim.report`` gathers every job into ``sweep.parquet``."""
    launcher = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]["_target_"]
    assert str(launcher).endswith("JoblibLauncher")
    threads = max(1, machine_cores() // 2)
    for j in range(SEEDS):
        manifest = read_json(sweep / str(j) / "manifest.json")
        assert manifest["status"] == "complete" and manifest["seed"] == j
        assert manifest["threads"] == {"torch": threads, "faiss": threads, "deterministic": False,
                                      "blas": blas_mode()}  # the jobs inherit this environment
    frame = pl.read_parquet(sweep / "sweep.parquet")
    assert frame["override.seed"].to_list() == list(range(SEEDS))
    assert frame["arms.control.spend"].to_list() == [
        read_json(sweep / str(j) / "metrics.json")["arms"]["control"]["spend"] for j in range(SEEDS)]


def _named(report: str) -> set[str]:
    line = next(x for x in report.splitlines() if "Causes named" in x or "No cause named" in x)
    return set(re.findall(r"\*\*(\w+)\*\*", line)) if "Causes named" in line else set()


def test_k_of_n_matches_the_per_seed_reports(sweep: Path) -> None:
    result = read_json(sweep / "replicates.json")
    assert len(result["groups"]) == 1 and result["paired"] == []
    group = result["groups"][0]
    assert group["seeds"] == list(range(SEEDS))
    jobs = {read_json(sweep / str(j) / "manifest.json")["seed"]: sweep / str(j) for j in range(SEEDS)}
    named = {seed: _named(make_report(d).read_text()) for seed, d in jobs.items()}
    assert len(group["verdicts"]) == len(RULES)
    for key, count in group["verdicts"].items():
        assert count["n"] == SEEDS
        assert count["k"] == sum(key in named[s] for s in jobs), key
        assert {int(s) for s in count["per_seed"]} == set(jobs)
    assert len(group["observations"]) == 9  # a two-arm world: the retrospective's checks
    md = (sweep / "replicates.md").read_text()
    assert "(3 seeds: 0, 1, 2)" in md and "of 3 |" in md
    assert "replicates.md" in (sweep / "sweep.md").read_text()


def test_means_and_intervals_are_those_of_the_per_seed_values(sweep: Path) -> None:
    group = read_json(sweep / "replicates.json")["groups"][0]
    per_seed = {read_json(sweep / str(j) / "manifest.json")["seed"]:
                read_json(sweep / str(j) / "metrics.json") for j in range(SEEDS)}
    for key, get in (("arms.control.spend", lambda m: m["arms"]["control"]["spend"]),
                     ("arms.treatment.l1_log_mae", lambda m: m["arms"]["treatment"]["l1_log_mae"])):
        values = np.array([get(per_seed[s]) for s in sorted(per_seed)], dtype=float)
        got = group["metrics"][key]
        half = stats.t.ppf(0.975, SEEDS - 1) * values.std(ddof=1) / np.sqrt(SEEDS)
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert got["low"] == pytest.approx(values.mean() - half, rel=1e-12)
        assert [got["per_seed"][str(s)] for s in sorted(per_seed)] == values.tolist()
        assert (got["median"], got["min"], got["max"]) == (np.median(values), values.min(),
                                                           values.max())
    # (spend is defined at every seed of a tiny world; its CPA needs an oCPM conversion per arm)
    lift = group["lifts"]["spend_per_request"]
    est = {str(s): m["lift"]["spend_per_request"]["estimate"] for s, m in per_seed.items()}
    assert lift["per_seed"] == est
    significant = sum(m["lift"]["spend_per_request"]["low"] > 0
                      or m["lift"]["spend_per_request"]["high"] < 0 for m in per_seed.values())
    assert group["lifts_significant"]["spend_per_request"]["k"] == significant


def _copy_as(src: Path, dst: Path, extra: str, change: dict[str, float]) -> None:
    """A job directory copied with one more override and ``change`` added to control metrics."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("logs", "plots", "report.md"))
    overrides = yaml.safe_load((dst / ".hydra" / "overrides.yaml").read_text())
    (dst / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, extra]))
    metrics: dict[str, Any] = read_json(dst / "metrics.json")
    for key, delta in change.items():
        metrics["arms"]["control"][key] += delta
    seed = read_json(dst / "manifest.json")["seed"]  # an attributed job: one Shapley value per seed
    metrics["attribution"] = {"outcomes": {"cpa_lift": {"shapley": {"parity_gap": 0.1 * seed}}}}
    (dst / "metrics.json").write_text(json.dumps(metrics))


def test_groups_that_share_seeds_are_compared_pair_by_pair(sweep: Path, tmp_path: Path) -> None:
    """Two values of a swept key at the same three seeds: the paired differences are exactly the
    per-seed changes, and their interval is the t-interval of those changes."""
    (tmp_path / "multirun.yaml").write_text((sweep / "multirun.yaml").read_text())
    deltas = {0: 1.0, 1: 1.5, 2: 2.0}
    for j in range(SEEDS):
        src = sweep / str(j)
        seed = read_json(src / "manifest.json")["seed"]
        _copy_as(src, tmp_path / str(j), "auction.reserve=0.0", {})
        _copy_as(src, tmp_path / str(j + SEEDS), "auction.reserve=0.5", {"spend": deltas[seed]})
    assert report_main([str(tmp_path)]) == 0
    result = read_json(tmp_path / "replicates.json")
    assert len(result["groups"]) == 2 and len(result["paired"]) == 1
    pair = result["paired"][0]
    assert (pair["key"], pair["base"], pair["other"]) == ("auction.reserve", 0.0, 0.5)
    diff = pair["differences"]["arms.control.spend"]
    assert {int(s): v for s, v in diff["per_seed"].items()} == pytest.approx(deltas, abs=1e-9)
    assert diff["mean"] == pytest.approx(1.5)
    assert diff["high"] - diff["mean"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.5 / np.sqrt(3))
    assert pair["differences"]["arms.control.l1_log_mae"]["mean"] == 0.0  # unchanged
    shapley = result["groups"][0]["shapley"]["cpa_lift.parity_gap"]
    assert shapley["mean"] == pytest.approx(0.1) and shapley["n"] == SEEDS
