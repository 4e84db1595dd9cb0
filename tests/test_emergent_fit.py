"""The search through the simulator: which knobs the statistics identify, the loss, the search
itself on a synthetic world with a known answer, and the command end to end on tiny worlds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim import calibrate as C
from sim import emergent_fit as E
from sim import fit_check as F
from sim import fit_targets as T


def test_each_statistic_identifies_its_knob() -> None:
    assert E.searched(["ctr", "cvr"]) == ["base_ctr_logit", "base_cvr_logit"]
    # conversions per impression alone cannot split clicking from converting: the CVR logit
    assert E.searched(["conversions_per_impr"]) == ["base_cvr_logit"]
    # beside the CVR it pins the CTR
    assert E.searched(["conversions_per_impr", "cvr"]) == ["base_ctr_logit", "base_cvr_logit"]
    assert E.searched(["position_ctr_2", "budget_exhausted"]) == ["position_ctr_2", "daily_budget_mean"]
    assert E.searched(["delay_within_1h"]) == []


def test_the_loss_counts_errors_in_tolerances() -> None:
    assert T.tolerance("ctr", 0.04, None) == T.RELATIVE_TOL
    assert T.tolerance("cvr", 0.005, 0.001) == pytest.approx(0.2)
    assert T.tolerance("budget_exhausted", 0.3, None) == T.EXHAUSTED_TOL
    assert T.z_score("ctr", 0.04 * math.exp(0.1), 0.04, 0.1) == pytest.approx(1.0)
    assert T.z_score("budget_exhausted", 0.35, 0.3, 0.05) == pytest.approx(1.0)
    assert T.z_score("cvr", None, 0.01, 0.1) == T.MISSING_Z
    assert T.z_score("cvr", 0.0, 0.01, 0.1) == T.MISSING_Z
    assert T.loss({}, {"ctr": 0.04}, {"ctr": 0.1}) == math.inf
    assert T.loss({"ctr": 0.04 * math.exp(-0.2)}, {"ctr": 0.04}, {"ctr": 0.1}) == pytest.approx(4.0)


def test_a_list_knob_keeps_its_other_slots() -> None:
    from conftest import tiny_config
    w = tiny_config().world
    o = E.world_overlay({"position_ctr_2": 0.4, "base_ctr_logit": -5.0}, w)
    assert o == {"world": {"position_ctr": [w.position_ctr[0], w.position_ctr[1], 0.4],
                           "base_ctr_logit": -5.0}}
    assert E.knob_values(w, ["position_ctr_1", "daily_budget_mean"]) == {
        "position_ctr_1": w.position_ctr[1], "daily_budget_mean": w.daily_budget_mean}


def _synthetic(base: dict[str, Any]) -> Any:
    """A stand-in for the simulator whose statistics are smooth, coupled functions of the knobs
    (selection lifts CTR above the base logit; budget exhaustion falls with the budget and rises
    with the CTR); a knob an overlay does not set keeps its value in ``base``."""
    def stats(world: dict[str, Any]) -> dict[str, float | None]:
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        ctr = sig(world["base_ctr_logit"] + 1.5)
        pos = world["position_ctr"]
        budget = world["daily_budget_mean"]
        return {"ctr": ctr, "cvr": sig(world["base_cvr_logit"] + 0.8), "position_ctr_1": pos[1] * 0.9,
                "position_ctr_2": pos[2] * 0.85,
                "budget_exhausted": sig(1.0 - math.log(budget / 100.0) + 10 * ctr)}

    def run(batch: E.Batch, root: Path, scenario: str, launcher: str, jobs: int,
            keep: bool = False) -> dict[str, dict[str, float | None] | None]:
        return {name: stats({**base, **o["world"]}) for name, o in batch.worlds.items()}
    return run, stats


def test_the_search_finds_known_knobs_on_a_synthetic_world(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """Optuna's GP sampler, the loss and the batching recover every knob of a known synthetic
    world within the recovery tolerance, starting from the base world's values."""
    from conftest import tiny_config
    base = tiny_config()
    truth = {"base_ctr_logit": -5.5, "base_cvr_logit": -4.0, "daily_budget_mean": 400.0}
    run, stats = _synthetic({"position_ctr": list(base.world.position_ctr)})
    monkeypatch.setattr(E, "run_worlds", run)
    s = stats({"position_ctr": list(base.world.position_ctr),
               **E.world_overlay(truth, base.world)["world"]})
    targets = {n: float(s[n]) for n in ("ctr", "cvr", "budget_exhausted")}  # type: ignore[arg-type]
    tols = {n: T.tolerance(n, v, None) for n, v in targets.items()}
    rec = E.search(targets, tols, base=base, under={}, scenario="default", root=tmp_path,
                   trials=40, fit_seeds=[0], jobs=2, batch=2, seed=3)
    assert rec.trials[0].params == E.knob_values(base.world, rec.knobs)  # the base world first
    assert rec.worlds == 40 and len(rec.trials) == 40
    for n, v in truth.items():
        err = abs(math.log(rec.best[n] / v)) if E.KNOBS[n].log else abs(rec.best[n] - v)
        assert err <= E.KNOBS[n].tolerance, (n, rec.best[n], v)


def test_the_command_fits_and_checks_on_tiny_worlds(tmp_path: Path) -> None:
    """``python -m sim.calibrate`` end to end on a tiny budget: the direct fits, a two-trial
    search through real worlds and one root step after it, the fidelity check at a fresh seed;
    the overlay holds the settings, the direct and the searched knobs, and composes into a valid config."""
    from conftest import TINY, tiny_config
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"statistics": {"ctr": 0.03, "delay_within_1h": 0.35,
                                                   "delay_within_24h": 0.5}}))
    settings = [t for t in TINY if not t.startswith("progress")]
    assert C.main([str(path), *settings, "--out", str(tmp_path / "fit"), "--trials", "2",
                   "--polish", "1", "--check-seeds", "7", "--jobs", "1"]) == 0
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["search"]["knobs"] == ["base_ctr_logit"] and len(fit["search"]["trials"]) == 3
    assert fit["search"]["polished"] == 1 and fit["cost"]["worlds"] == 4
    check = fit["check"]["fidelity"]
    assert set(check) == {"ctr", "delay_within_1h", "delay_within_24h"}
    assert check["ctr"]["seeds"] == 1 and 0 < check["ctr"]["median"] < 1
    overlay = yaml.safe_load((tmp_path / "fit" / "calibrated.yaml").read_text())
    assert overlay["world"]["base_ctr_logit"] == fit["search"]["best"]["base_ctr_logit"]
    assert overlay["days"] == 0.25 and overlay["world"]["conversion_delay"] == "lognormal"
    cfg = tiny_config(*(f"world.{k}={json.dumps(v)}" for k, v in overlay["world"].items()))
    assert cfg.world.base_ctr_logit == overlay["world"]["base_ctr_logit"]
    md = (tmp_path / "fit" / "fit.md").read_text()
    assert "Fidelity" in md and "world.ctr_affinity" in md and "Cost: 4 worlds" in md
    # the logs of the search's worlds are gone once read
    assert not list((tmp_path / "fit").rglob("impressions.parquet"))


@pytest.mark.parametrize("args,message", [
    (["seed=3"], "plain key=value"),
    (["index=batch"], "plain key=value"),
    (["hydra.launcher.n_jobs=4"], "plain key=value"),
    (["world.no_such_knob=1"], "no_such_knob"),
    (["--recover", "2"], "not both"),
    (["--fit-seeds", ""], "at least one seed"),
    (["--fit-seeds", "100"], "must be fresh"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["+world.extra=1"], "plain key=value"),
])
def test_bad_settings_stop_before_any_world(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], message: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"statistics": {"ctr": 0.03}}))
    with pytest.raises(SystemExit):
        C.main([str(path), *args, "--out", str(tmp_path / "fit")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "fit").exists()


def test_the_box_is_centred_where_the_base_worlds_selection_lift_puts_the_target() -> None:
    """Selection lifts a rate by about the same logit whatever the base logit: the box of a
    logit is centred at base + logit(target) - logit(base world's rate); a slot factor where the
    base world's realised-to-set ratio puts the target; the budget a factor 10 either way."""
    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    start = {"base_ctr_logit": -3.8, "base_cvr_logit": -3.2, "position_ctr_1": 0.75,
             "daily_budget_mean": 400.0}
    first = {"ctr": 0.086, "cvr": 0.24, "conversions_per_impr": 0.0206, "position_ctr_1": 0.655}
    box = E.search_box(start, first, {"ctr": 0.04, "cvr": 0.0053, "position_ctr_1": 0.8})
    centre = -3.8 + lg(0.04) - lg(0.086)
    assert box["base_ctr_logit"] == pytest.approx((centre - E.BOX_LOGIT, centre + E.BOX_LOGIT))
    centre = -3.2 + lg(0.0053) - lg(0.24)
    assert box["base_cvr_logit"] == pytest.approx((centre - E.BOX_LOGIT, centre + E.BOX_LOGIT))
    # 0.75 * 0.8 / 0.655 = 0.916: the box keeps its width inside the knob's range (<= 1)
    assert box["position_ctr_1"] == pytest.approx((1.0 - 2 * E.BOX_POSITION, 1.0))
    assert box["daily_budget_mean"] == pytest.approx((40.0, 4000.0))
    # conversions per impression alone: the CVR the target implies at the base world's CTR
    box = E.search_box({"base_cvr_logit": -3.2}, first, {"conversions_per_impr": 0.0005})
    centre = -3.2 + lg(0.0005 / 0.086) - lg(0.24)
    assert box["base_cvr_logit"] == pytest.approx((centre - E.BOX_LOGIT, centre + E.BOX_LOGIT))
    # a base world with no conversions: the whole range
    assert E.search_box({"base_cvr_logit": -3.2}, {"ctr": 0.01, "cvr": None},
                        {"cvr": 0.01})["base_cvr_logit"] == (E.KNOBS["base_cvr_logit"].low,
                                                             E.KNOBS["base_cvr_logit"].high)


def test_the_root_step_moves_each_knob_by_its_error_over_its_slope() -> None:
    """The trials' realised CTR logit is 1.2 x the knob + 1 (and ignores the CVR knob), budget
    exhaustion falls 0.2 per unit of log budget: from the best trial the CTR knob moves by the
    logit error / 1.2, the slot factor by target / realised, the budget by its error / -0.2 in
    log; a knob with no target is held; a damping of 0.5 halves every step."""
    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    sg = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    points = [(-5.0, -4.0, 300.0), (-4.5, -3.0, 500.0), (-4.0, -4.5, 200.0), (-3.5, -3.5, 800.0),
              (-4.2, -3.8, 400.0), (-4.8, -3.2, 250.0)]
    trials = [E.Trial(number=i, loss=1.0,
                      params={"base_ctr_logit": c, "base_cvr_logit": v, "position_ctr_1": 0.7,
                              "daily_budget_mean": b},
                      statistics={"ctr": sg(1.2 * c + 1.0), "cvr": sg(v + 0.5), "position_ctr_1": 0.64,
                                  "budget_exhausted": 1.5 - 0.2 * math.log(b)})
              for i, (c, v, b) in enumerate(points)]
    found = E.Search(knobs=["base_ctr_logit", "base_cvr_logit", "position_ctr_1", "daily_budget_mean"],
                     trials=trials, best=dict(trials[4].params), best_loss=0.5, best_index=4)
    targets = {"ctr": 0.04, "position_ctr_1": 0.72, "budget_exhausted": 0.2}
    step = E.root_step(found, targets)
    got = trials[4].statistics
    assert step["base_ctr_logit"] == pytest.approx(-4.2 + (lg(0.04) - lg(got["ctr"])) / 1.2)
    assert step["position_ctr_1"] == pytest.approx(0.7 * 0.72 / 0.64)
    fall = (0.2 - got["budget_exhausted"]) / -0.2
    assert step["daily_budget_mean"] == pytest.approx(400.0 * math.exp(fall))
    assert step["base_cvr_logit"] == -3.8  # no cvr target: held
    half = E.root_step(found, targets, damping=0.5)
    assert half["base_ctr_logit"] == pytest.approx(-4.2 + 0.5 * (lg(0.04) - lg(got["ctr"])) / 1.2)
    assert half["position_ctr_1"] == pytest.approx(0.7 + 0.5 * 0.7 * (0.72 / 0.64 - 1))
    assert half["daily_budget_mean"] == pytest.approx(400.0 * math.exp(fall / 2))
    # a slot factor moves at most half its box; between its neighbours (the base world's slots)
    far_slot = E.root_step(found, {"position_ctr_1": 2.0})
    assert far_slot["position_ctr_1"] == pytest.approx(0.7 + E.BOX_POSITION / 2)
    low = E.root_step(found, {"position_ctr_1": 0.2}, slots=[1.0, 0.7, 0.6])
    assert low["position_ctr_1"] == 0.6  # not below slot 3's factor
    high = E.root_step(found, {"position_ctr_1": 0.9}, slots=[0.72, 0.7, 0.6])
    assert high["position_ctr_1"] == 0.72  # not above the top slot's
    far = E.root_step(found, {"ctr": 0.0001})  # at most half the box per step
    assert far["base_ctr_logit"] == pytest.approx(-4.2 - E.BOX_LOGIT / 2)
    # too few trials to read a slope: a rate's logit at slope 1, the budget held
    few = E.Search(knobs=found.knobs, trials=trials[4:5], best=found.best, best_loss=0.5, best_index=0)
    step = E.root_step(few, {**targets, "ctr": 0.03})
    assert step["base_ctr_logit"] == pytest.approx(-4.2 + lg(0.03) - lg(got["ctr"]))
    assert step["daily_budget_mean"] == 400.0


def test_root_steps_after_the_gp_reach_the_floor_it_found(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """On the synthetic world, a short GP search leaves the knobs off; three rounds of root steps
    from its best bring every knob within the recovery tolerance and the loss below the GP's."""
    from conftest import tiny_config
    base = tiny_config()
    truth = {"base_ctr_logit": -5.5, "base_cvr_logit": -4.0, "position_ctr_1": 0.62,
             "daily_budget_mean": 400.0}
    run, stats = _synthetic({"position_ctr": list(base.world.position_ctr)})
    monkeypatch.setattr(E, "run_worlds", run)
    s = stats({**E.world_overlay(truth, base.world)["world"]})
    targets = {n: float(s[n]) for n in ("ctr", "cvr", "position_ctr_1", "budget_exhausted")}  # type: ignore[arg-type]
    tols = {n: T.tolerance(n, v, None) for n, v in targets.items()}
    kw = dict(base=base, under={}, scenario="default", trials=10, fit_seeds=[0], jobs=2, batch=2, seed=3)
    gp = E.search(targets, tols, root=tmp_path / "gp", **kw)  # type: ignore[arg-type]
    rec = E.search(targets, tols, root=tmp_path / "polished", polish=3, **kw)  # type: ignore[arg-type]
    assert rec.trials[:10] == gp.trials and rec.polished == len(rec.trials) - 10 <= 6
    assert rec.best_loss < gp.best_loss
    for n, v in truth.items():
        err = abs(math.log(rec.best[n] / v)) if E.KNOBS[n].log else abs(rec.best[n] - v)
        assert err <= E.KNOBS[n].tolerance, (n, rec.best[n], v)


def test_the_search_is_the_same_at_any_number_of_jobs(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """``jobs`` sets how many of a batch's worlds run at a time, nothing else: at one job and at
    four the GP proposes the same trials and the root steps are the same; ``batch`` is what the
    search depends on (two proposals before the GP is told differ from one)."""
    from conftest import tiny_config
    base = tiny_config()
    fixed = {"position_ctr": list(base.world.position_ctr),
             "daily_budget_mean": base.world.daily_budget_mean}
    run, stats = _synthetic(fixed)
    monkeypatch.setattr(E, "run_worlds", run)
    s = stats({**fixed, **E.world_overlay(
        {"base_ctr_logit": -5.5, "base_cvr_logit": -4.0}, base.world)["world"]})
    targets = {n: float(s[n]) for n in ("ctr", "cvr")}  # type: ignore[arg-type]
    tols = {n: T.tolerance(n, v, None) for n, v in targets.items()}
    kw = dict(base=base, under={}, scenario="default", trials=8, fit_seeds=[0], seed=2, polish=2)
    runs = {(jobs, batch): E.search(targets, tols, root=tmp_path / f"j{jobs}b{batch}", jobs=jobs,
                                    batch=batch, **kw)  # type: ignore[arg-type]
            for jobs, batch in ((1, 1), (4, 1), (1, 2), (4, 2))}
    for batch in (1, 2):
        assert runs[(1, batch)].trials == runs[(4, batch)].trials
        assert runs[(1, batch)].batch == batch
    assert runs[(1, 1)].trials != runs[(1, 2)].trials
    with pytest.raises(ValueError, match="batch must be at least 1"):
        E.search(targets, tols, root=tmp_path / "bad", jobs=1, batch=0, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(F, "run_worlds", lambda *a, **k: pytest.fail("a world ran"))
    with pytest.raises(ValueError, match="batch must be at least 1, got 0"):  # before the truths
        F.recovery(1, base=base, under={}, scenario="default", root=tmp_path / "rec", trials=4,
                   batch=0)


def test_a_root_step_that_does_not_improve_halves_the_next_and_no_point_runs_twice(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A slot ratio three times as steep as the step assumes: the full step overshoots, so the
    next round's step is half as long; no knob vector is run twice, and the rounds still end
    nearer the target than the GP's best."""
    from conftest import tiny_config
    base = tiny_config()

    def run(batch: E.Batch, root: Path, scenario: str, launcher: str, jobs: int,
            keep: bool = False) -> dict[str, dict[str, float | None] | None]:
        return {name: {"position_ctr_1": 0.6 * (o["world"]["position_ctr"][1] / 0.7) ** 3}
                for name, o in batch.worlds.items()}
    monkeypatch.setattr(E, "run_worlds", run)
    targets = {"position_ctr_1": 0.6 * (0.62 / 0.7) ** 3}
    tols = {"position_ctr_1": 0.01}
    rec = E.search(targets, tols, base=base, under={}, scenario="default", root=tmp_path,
                   trials=3, fit_seeds=[0], jobs=1, seed=1, polish=6)
    points = [t.params["position_ctr_1"] for t in rec.trials]
    assert len(points) == len(set(points))
    assert rec.polished >= 2 and abs(rec.best["position_ctr_1"] - 0.62) < min(
        abs(p - 0.62) for p in points[:3])


def test_the_recovery_test_end_to_end_on_the_synthetic_world(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Two draws on the synthetic world: each a typed draw with its truth, targets, fitted knobs,
    errors and verdicts, the world count the search ran; the report counts the draws within each
    knob's tolerance and marks a failed truth world."""
    from conftest import tiny_config
    base = tiny_config()
    run, _ = _synthetic({"position_ctr": list(base.world.position_ctr),
                         "daily_budget_mean": base.world.daily_budget_mean})
    monkeypatch.setattr(E, "run_worlds", run)
    monkeypatch.setattr(F, "run_worlds", run)
    draws = F.recovery(2, base=base, under={}, scenario="default", root=tmp_path, trials=8,
                       polish=3, jobs=2, batch=2)
    assert len(draws) == 2 and not any(d.failed for d in draws)
    for d in draws:
        assert d.fitted is not None and d.within is not None and d.error is not None
        assert set(d.fitted) == set(d.within) == set(E.KNOBS)  # every knob searched
        assert d.targets is not None and "conversions_per_impr" not in d.targets
        assert 8 < d.worlds <= 8 + 2 * 3 + 1
        for n, e in d.error.items():
            assert d.within[n] == (e <= E.KNOBS[n].tolerance)
    md = F.recovery_report([*draws, F.Draw(truth=draws[0].truth, failed=True)], 12.0)
    for n in E.KNOBS:
        hits = sum(d.within[n] for d in draws)  # type: ignore[index]
        assert f"| `{n}` |" in md and f"| {hits}/3 |" in md.split(f"| `{n}` |")[-1].split("\n")[0]
    assert "| 2 | failed |" in md


def test_signed_and_zero_statistics_are_compared_by_their_difference() -> None:
    """A correlation of -0.97 met exactly is within tolerance; an hour share of 0 has one."""
    tol = T.tolerance("budget_target_corr", -0.97, None)
    assert tol == T.EXHAUSTED_TOL and T.z_score("budget_target_corr", -0.97, -0.97, tol) == 0.0
    assert T.z_score("budget_target_corr", -0.92, -0.97, tol) == pytest.approx(1.0)
    assert T.tolerance("hour_share_3", 0.0, None) == 0.01
    row = F.fidelity({"budget_target_corr": -0.97}, {"budget_target_corr": tol},
                     [{"budget_target_corr": -0.96}, {"budget_target_corr": -0.9}])
    assert row["budget_target_corr"].within == 1 and row["budget_target_corr"].median_within


@pytest.mark.parametrize("targets,message", [
    ({"ctr": 0.0}, "`ctr`: 0.0"), ({"cvr": 1.2}, "`cvr`: 1.2"),
    ({"position_ctr_1": -0.1}, "`position_ctr_1`"), ({"budget_exhausted": 1.5}, "`budget_exhausted`"),
    ({"budget_target_corr": -1.5}, "`budget_target_corr`"),
    ({"ctr": 0.01, "conversions_per_impr": 0.02}, "must be < 1"),
])
def test_targets_no_world_can_have_are_refused(targets: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        T.check_targets(targets)


def test_an_out_directory_that_holds_files_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"statistics": {"ctr": 0.03}}))
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "fit.json").write_text("{}")
    with pytest.raises(SystemExit):
        C.main([str(path), "--out", str(tmp_path / "fit"), "--trials", "0", "--check-seeds", ""])
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "fit" / "fit.json").read_text() == "{}"


def test_each_world_is_read_from_the_job_that_ran_it(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A job's statistics are used only if its manifest names the world asked for and says it
    completed: a failed job and a job holding another world read as failed worlds."""
    def fake(names: list[str], searchpath: Path, sweep: Path, launcher: str, jobs: int) -> Path:
        for k, name in enumerate(names):
            d = sweep / str(k)
            d.mkdir(parents=True)
            status = "failed" if name == "b" else "complete"
            scenario = "a" if name == "c" else name  # job 2 holds another world
            (d / "manifest.json").write_text(json.dumps({"status": status, "scenario": scenario}))
        return sweep
    monkeypatch.setattr(E, "multirun", fake)
    monkeypatch.setattr(E, "read_logs", lambda d: {"dir": d.name})
    monkeypatch.setattr(E, "statistics", lambda logs: {"ctr": float(logs["dir"]) + 0.5})
    got = E.run_worlds(E.Batch(worlds={"a": {}, "b": {}, "c": {}}), tmp_path, "default", "joblib", 1)
    assert got == {"a": {"ctr": 0.5}, "b": None, "c": None}
    with pytest.raises(FileExistsError):  # a second batch into the same directory
        E.run_worlds(E.Batch(worlds={"a": {}}), tmp_path, "default", "joblib", 1)


def test_a_proposal_with_slot_factors_growing_down_the_slots_is_not_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The config refuses slot factors that grow down the slots: such a proposal is told to the
    GP as a missing world, never run; every world run is ordered."""
    from conftest import tiny_config
    base = tiny_config()
    seen: list[list[float]] = []
    run, stats = _synthetic({"position_ctr": list(base.world.position_ctr), "daily_budget_mean": 60.0,
                             "base_ctr_logit": -3.8, "base_cvr_logit": -3.2})

    def spy(batch: E.Batch, *a: Any, **k: Any) -> Any:
        seen.extend(o["world"]["position_ctr"] for o in batch.worlds.values())
        return run(batch, *a, **k)
    monkeypatch.setattr(E, "run_worlds", spy)
    targets = {"position_ctr_1": 0.85 * 0.9, "position_ctr_2": 0.8 * 0.85}  # near-equal factors
    rec = E.search(targets, {n: 0.1 for n in targets}, base=base, under={}, scenario="default",
                   root=tmp_path, trials=16, fit_seeds=[0], jobs=2, batch=2, seed=1)
    assert all(p[1] >= p[2] for p in seen) and len(seen) == rec.worlds == len(rec.trials)
    assert rec.refused > 0 and len(rec.trials) + rec.refused >= 16
