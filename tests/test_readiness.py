"""``python -m sim.readiness``: the skew sweep and gate of any family, replayed from a run's
training logs, agree with the sweep the run computed; a family's result does not depend on which
others are checked with it; bad input stops before anything runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from test_families import PATH

from sim import lifecycle
from sim.config import ConfigError
from sim.readiness import check, main, training_chunks
from sim.report.attribution import save_config
from sim.results import to_json
from sim.rng import TRAINING_LOG_KEEP, keyed_uniform
from sim.run import run

from conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny world that logged its training rows and swept `simple` (served) and `dhen`."""
    d = tmp_path_factory.mktemp("logged")
    cfg = tiny_config("logs.training_rows=true", "readiness.families=[simple,dhen]")
    save_config(cfg, d)
    return d, run(cfg, d, scenario="default")


def test_the_training_rows_are_the_chunks_releases_read(logged_run: tuple[Path, dict[str, Any]]) -> None:
    d, _ = logged_run
    chunks = training_chunks(d)
    frame = pl.read_parquet(d / "logs" / "training_rows.parquet")
    assert sum(len(c) for _, c in chunks) == frame.height > 0
    times = [t for t, _ in chunks]
    assert times == sorted(times)  # appended tick by tick
    for t, rows in chunks:  # a chunk is one tick's rows of one arm, logged at the tick's start
        assert rows.time.min() >= t and len(set(rows.arm.tolist())) == 1
    assert chunks[0][1].ad_features.ndim == 2 and chunks[0][1].ad_features.dtype.name == "float32"


def test_the_check_agrees_with_the_run_whatever_else_is_checked(
        logged_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    d, m = logged_run
    for families in (["dhen", "simple"], [PATH, "dhen"]):
        r = check(families, d, tmp_path / str(len(families)) / families[0].replace(":", "_"))
        assert r.lineages["dhen"] == "readiness/dhen"
        for family in set(families) & {"simple", "dhen"}:
            assert to_json(r.sweep[family]) == m["offline"]["skew_sweep"][family]  # to the last bit
            assert to_json(r.gate[family]) == m["offline"]["skew_gate"][family]
    assert r.gate[PATH].result in ("pass", "fail") and set(r.sweep[PATH]) >= {0, 1, 2}


def test_the_replay_runs_the_runs_release_process(logged_run: tuple[Path, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    """The replay's releases and rollouts are the run's, row for row: the same start-up models,
    the same releases at the same times with the same training losses and holdout metrics, and
    each release's query tower rolled out after the run's delay (the same SimPy process)."""
    d, m = logged_run
    out = tmp_path / "out"
    r = check(["simple", "dhen"], d, out)
    assert r.releases == m["releases"] >= 2
    for table in ("model_releases", "rollouts"):
        replayed, ran = pl.read_parquet(out / "logs" / f"{table}.parquet"), \
            pl.read_parquet(d / "logs" / f"{table}.parquet")
        assert replayed.equals(ran), table
    sides = pl.read_parquet(out / "logs" / "rollouts.parquet")["side"].to_list()
    assert sides.count("query") == sides.count("item") == r.releases


def test_a_log_past_its_cap_thins_and_the_replay_thins_alike(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny world whose training log's cap (1,000 rows) fills within the label wait: its
    releases still train (a log that dropped its oldest rows found every release's window empty
    and released nothing), on the unclicked rows the log kept at a share w < 1 with L2's click
    logit offset by -log w and L1's unclicked rows weighted by 1 / w, and the replay, re-feeding
    the logged chunks, thins them alike: its releases are the run's, row for row."""
    seen: list[tuple[str, float]] = []
    fit_l2, fit_l1 = lifecycle.fit_l2, lifecycle.fit_l1

    def l2(*a: Any, **k: Any) -> Any:
        seen.append(("l2", k["ctr_offset"]))
        return fit_l2(*a, **k)

    def l1(*a: Any, **k: Any) -> Any:
        seen.append(("l1", k["unclicked_weight"]))
        return fit_l1(*a, **k)

    monkeypatch.setattr(lifecycle, "fit_l2", l2)
    monkeypatch.setattr(lifecycle, "fit_l1", l1)
    d = tmp_path / "run"
    cfg = tiny_config("logs.training_rows=true", "releases.train_max_rows=1000")
    save_config(cfg, d)
    m = run(cfg, d, scenario="default")
    assert m["training_log_keep"] < 1 and m["releases"] >= 2
    offsets = [v for kind, v in seen if kind == "l2"]
    weights = [v for kind, v in seen if kind == "l1"]
    assert len(offsets) == len(weights) == m["releases"]
    for offset, weight in zip(offsets, weights, strict=True):  # w = 1/2, 1/4, ...
        assert offset > 0 and math.isclose(weight, math.exp(offset)) and math.log2(weight).is_integer()
    assert weights == sorted(weights) and weights[-1] <= 1 / m["training_log_keep"]  # w only falls
    logged = pl.read_parquet(d / "logs" / "training_rows.parquet")
    # the first release (at 7,200 s) trains on rows before 5,400 s: more than the cap came after
    assert logged.filter(pl.col("time").is_between(5400, 7200, closed="left")).height > 1000
    # offline evaluation reads the uniform view: the window's rows whose keyed draw is below the
    # share, clicked or not (every clicked row would be more)
    w = m["offline"]["window"]
    inside = logged.filter(pl.col("time").is_between(w["start"], w["end"], closed="left"))
    with np.errstate(over="ignore"):
        key = inside["time"].to_numpy().view(np.uint64) ^ \
            (inside["user"].to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    draws = keyed_uniform(cfg.seed, key, inside["ad_id"].to_numpy(), TRAINING_LOG_KEEP)
    assert w["rows"] == int((draws < m["training_log_keep"]).sum()) < inside.height
    out = tmp_path / "out"
    r = check(["simple"], d, out)
    assert r.releases == m["releases"]
    for table in ("model_releases", "rollouts"):
        replayed, ran = pl.read_parquet(out / "logs" / f"{table}.parquet"), \
            pl.read_parquet(d / "logs" / f"{table}.parquet")
        assert replayed.equals(ran), table


def test_a_family_the_treatment_serves_is_the_treatments_lineage_as_in_the_run(tmp_path: Path) -> None:
    d = tmp_path / "run"
    cfg = tiny_config("logs.training_rows=true", "readiness.families=[simple,dhen]",
                      "experiment.arms=[control,treatment]",
                      "experiment.treatment.models.l1_family=dhen")
    save_config(cfg, d)
    m = run(cfg, d, scenario="default")
    r = check(["dhen", "simple"], d, tmp_path / "out")
    assert r.lineages == {"dhen": "treatment/l1", "simple": "control/l1"}
    assert to_json(r.sweep) == m["offline"]["skew_sweep"] and to_json(r.gate) == m["offline"]["skew_gate"]


def test_the_cli_makes_each_world_then_checks_it_loading_the_fits_the_world_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--families", "simple,dhen", "--out", str(out), "replicates=2", *TINY]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"out_dir: {out}"
    assert any(line.startswith("simple") and "threshold +25%" in line for line in printed)
    assert "across 2 worlds (seeds 0, 1):" in printed
    summary = json.loads((out / "readiness_worlds.json").read_text())["families"]
    for seed in (0, 1):
        got = json.loads((out / f"seed_{seed}" / "readiness.json").read_text())
        world = json.loads((out / f"seed_{seed}" / "world" / "metrics.json").read_text())
        assert set(world["offline"]["skew_sweep"]) == {"simple"}  # the world swept what it served
        assert got["skew_sweep"]["simple"] == world["offline"]["skew_sweep"]["simple"]
        for family in ("simple", "dhen"):
            assert summary[family]["increase"]["by_world"][seed] == got["skew_gate"][family]["increase"]
        stats = json.loads((out / f"seed_{seed}" / "manifest.json").read_text())["checkpoints"]
        # control's L2 and L1 at start-up and each release come from the world's cache; dhen is trained
        assert stats["from_disk"] == 2 * (1 + got["releases"]) and stats["trained"] == 1 + got["releases"]
    for family, s in summary.items():
        per_seed = [json.loads((out / f"seed_{k}" / "readiness.json").read_text())["skew_gate"][family]
                    for k in (0, 1)]
        assert s["passes"] == sum(g["result"] == "pass" for g in per_seed) and s["seeds"] == [0, 1]
    assert (out / "readiness_worlds.png").stat().st_size > 0
    assert (out / "seed_1" / "readiness.png").stat().st_size > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--families", "simple,no_such_family"], "readiness.families[1]"),
    (["--families", "simple", "world.n_users=10"], "only readiness.*, models.*, cache.* may change"),
    (["--families", ""], "name at least one L1 family"),
    (["--families", "simple", "readiness.gate_distance=9"], "readiness.gate_distance"),
    (["--families", "simple", "replicates=2"], "with --run the worlds are the runs'"),
    (["--families", "simple", "readiness.max_distance='3'"], "`readiness.max_distance` is a number"),
])
def test_bad_input_stops_with_the_key_and_writes_nothing(
        logged_run: tuple[Path, dict[str, Any]], tmp_path: Path, args: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    d, _ = logged_run
    out = tmp_path / "out"
    assert main(["--run", str(d), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_run_without_its_training_rows_says_how_to_make_them(tiny_run: Path, tmp_path: Path) -> None:
    d = tmp_path / "run"
    save_config(tiny_config(), d)
    (d / "logs").symlink_to(tiny_run / "logs")
    with pytest.raises(ConfigError, match="logs.training_rows=true"):
        check(["simple"], d, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_check_that_fails_says_failed_in_its_manifest(
        logged_run: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a fit diverged")

    monkeypatch.setattr("sim.readiness.replay", broken)
    with pytest.raises(RuntimeError):
        check(["simple"], logged_run[0], tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: a fit diverged"
    assert not (tmp_path / "out" / "readiness.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["replicates=0"], "replicates=0: a number of worlds >= 1"),
    (["replicates=2", "seed=3"], "leave seed= out"),
    (["world.n_userz=3"], "n_userz"),
    (["--families", "simple,no_such_family"], "readiness.families[1]"),
    (["--families", ""], "name at least one L1 family"),
])
def test_bad_input_stops_before_any_world_runs(tmp_path: Path, args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--families", "simple", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_several_runs_are_checked_one_by_one_and_summarised(
        logged_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    d, m = logged_run
    out = tmp_path / "out"
    assert main(["--run", str(d), str(d), "--families", "dhen", "--out", str(out)]) == 0
    summary = json.loads((out / "readiness_worlds.json").read_text())["families"]["dhen"]
    gate = m["offline"]["skew_gate"]["dhen"]
    assert summary["increase"]["by_world"] == [gate["increase"]] * 2  # the same logs, the same gate
    assert summary["passes"] == 2 * (gate["result"] == "pass") and summary["worlds"] == 2
    assert (out / f"0_{d.name}" / "readiness.json").exists() and (out / f"1_{d.name}").is_dir()
