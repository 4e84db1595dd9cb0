"""The diagnosis benchmark: the library's draws, the scoring, and a tiny library end to end."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sim import diagnosis_bench as B
from sim.report import diagnosis as D
from sim.report import verdicts as V
from sim.report.plots import bench_detection
from sim.report.rates import held_out_rates, rate_line
from sim.report.verdicts import CAUSE, RULED_OUT

# the tiny world of the other tests, without its deploy and release-window keys: the library's
# own (synchronous deploys tied to the release interval) must hold
TINY_BENCH = [
    "days=0.25", "world.n_users=400", "world.n_advertisers=12", "world.ads_per_advertiser=8",
    "world.daily_budget_mean=60", "traffic.requests_per_day=16000", "traffic.tick_s=600",
    "pacing.interval_s=1200", "funnel.k_retrieval=40", "funnel.k_l1=16", "funnel.k_l2=6",
    "funnel.ctr_prior_contexts=8", "training.exploration_requests=2000", "training.epochs=2",
    "training.batch_size=1024", "threads.torch=1", "threads.faiss=1", "releases.interval_s=7200",
    "releases.label_wait_s=1800", "evaluation.rows=3000", "index.enrich_interval_s=1200",
    "index.snapshot_interval_s=3600", "index.fresh_build_interval_s=3600",
    "logs.full_request_rate=0.05", "logs.partial_request_rate=0.1"]


def test_a_world_depends_on_its_index_only() -> None:
    assert B.library(3, offset=5) == B.library(10)[5:8]
    worlds = B.library(200)
    assert {w.half for w in worlds[::2]} == {"calibration"}
    assert {w.half for w in worlds[1::2]} == {"held_out"}
    assert all(not w.hazards for w in worlds if w.design == "aa")
    aa = sum(w.design == "aa" for w in worlds) / len(worlds)
    assert 0.2 < aa < 0.4  # drawn at 0.3
    for h in B.HAZARDS:  # each at 0.35 of the A/B worlds
        share = sum(h in w.hazards for w in worlds if w.design == "ab") / sum(
            w.design == "ab" for w in worlds)
        assert 0.25 < share < 0.45, (h, share)
    sla = [w.hazards["timeouts"] for w in worlds if "timeouts" in w.hazards]
    assert 4.0 <= min(sla) and max(sla) <= 16.0
    assert {w.hazards["serving_path"] for w in worlds if "serving_path" in w.hazards} == set(
        map(float, B.NPROBES))
    with pytest.raises(ValueError, match="size"):
        B.library(0)


def test_bad_arguments_stop_before_any_world_runs(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for args, words in ((["--size", "0"], "--size"), (["--jobs", "0"], "--jobs"),
                        (["days"], "key=value"),
                        (["world.n_users='1000'"], "`world.n_users` is a number")):  # not cast
        with pytest.raises(SystemExit) as stop:
            B.main([*args, "--out", str(tmp_path)])
        assert stop.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # runs of another library are refused, not mis-scored
    run = tmp_path / "runs" / "0"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"scenario": "v1w00007", "status": "complete"}))
    with pytest.raises(SystemExit):
        B.main(["--size", "1", "--out", str(tmp_path), "--score-only"])
    assert "v1w00007" in capsys.readouterr().err


def _world(index: int, design: str, hazards: dict[str, float]) -> B.BenchWorld:
    return B.BenchWorld(index=index, half="held_out" if index % 2 else "calibration",
                        design=design, hazards=hazards, overlay={})


def test_scores_by_hand(tmp_path: Path) -> None:
    worlds = [_world(1, "aa", {}), _world(3, "ab", {}), _world(5, "ab", {"timeouts": 6.0}),
              _world(7, "ab", {"timeouts": 14.0, "parity_gap": 1.0}), _world(9, "ab", {"parity_gap": 1.0}),
              _world(0, "ab", {"timeouts": 6.0})]  # calibration half: not in the held-out scores
    quiet = {k: RULED_OUT for k in ("timeouts", "parity_gap", "mix_shift")}
    results = [quiet | {"mix_shift": CAUSE}, quiet | {"timeouts": CAUSE}, quiet | {"timeouts": CAUSE},
               quiet | {"parity_gap": CAUSE}, None, quiet]
    s = D.score(worlds, results)
    assert s["failed"] == 1
    held = s["halves"]["held_out"]
    assert held["worlds"] == 4
    t = held["rates"]["timeouts"]
    assert (t["detection"]["named"], t["detection"]["worlds"]) == (1, 2)
    assert t["false_alarm"]["aa"]["rate"] == 0.0 and t["false_alarm"]["ab_clean"]["rate"] == 1.0
    assert [m["magnitude"] for m in t["by_magnitude"]] == [6.0, 14.0]
    assert [m["rate"] for m in t["by_magnitude"]] == [1.0, 0.0]
    p = held["rates"]["parity_gap"]
    assert (p["detection"]["named"], p["detection"]["worlds"]) == (1, 1)  # world 9 failed
    assert held["fires"]["mix_shift"]["aa"]["rate"] == 1.0
    # world 7 has parity and timeouts: its timeouts verdict is no cross-firing of the parity gap,
    # and world 9 (parity alone) failed, so the parity row's timeouts cell has no world
    assert held["confusion"]["parity_gap"]["timeouts"] == {"named": 0, "worlds": 0, "rate": None}
    assert held["confusion"]["timeouts"]["parity_gap"]["worlds"] == 1  # world 5 (7 has parity)
    assert held["confusion"]["timeouts"]["timeouts"]["rate"] == 0.5
    assert s["halves"]["calibration"]["rates"]["timeouts"]["detection"]["worlds"] == 1
    assert "| timeouts | 50% (1/2) |" in D.render(s, "cmd")
    # the held-out rates as a report prints them beside each verdict
    rates = held_out_rates(s, "library v2, worlds 1-9", "cmd")
    assert rates["verdicts"]["timeouts"]["detection"] == {"named": 1, "worlds": 2}
    line = rate_line("timeouts", rates)
    assert line is not None and line.startswith("on the diagnosis benchmark (library v2, worlds 1-9)")
    assert "named in 1 of 2 worlds with its hazard" in line
    assert rate_line("no_such_verdict", rates) is None
    # the detection plot: a panel per verdict with a hazard, written whole
    fig = bench_detection(s, tmp_path / "detection.png")
    assert fig is not None and (tmp_path / "detection.png").stat().st_size > 0
    assert len([ax for ax in fig.axes if ax.get_title()]) == len(s["halves"]["held_out"]["rates"])


def test_a_tiny_library_end_to_end(tmp_path: Path) -> None:
    """Four worlds through the Hydra launcher (worlds 4-7: two A/B worlds with a parity gap and a
    tight SLA, one of them with version skew and label leakage too, an A/A world, an A/B world
    with an approximate index). Every run completes, the scores count its own verdicts, the
    parity gap (a family the treatment reads, zero in its index) is named only where it was
    injected, and the A/A world names nothing."""
    assert B.main(["--size", "4", "--offset", "4", "--out", str(tmp_path), *TINY_BENCH]) == 0
    out = json.loads((tmp_path / "diagnosis_bench.json").read_text())
    worlds = [B.draw_world(i) for i in range(4, 8)]
    assert [w["name"] for w in out["worlds"]] == [w.name for w in worlds]
    assert all(v is not None for v in out["verdicts"])
    named = []
    for w, v in zip(worlds, out["verdicts"], strict=True):
        if v["parity_gap"] == CAUSE:
            assert "parity_gap" in w.hazards, (w, v)
            named.append(w.index)
        if w.design == "aa":
            assert [k for k, s in v.items() if s == CAUSE] == [], (w, v)
    # world 5's L1 leans on the zeroed counters; world 4's does not in this tiny world (zeroing
    # them lowers its offline loss), and the audit says so
    assert named == [5]
    assert out["scores"]["halves"]["held_out"]["rates"]["parity_gap"]["detection"]["named"] == 1
    # world 5's treatment pipeline joins the counters at label time, and only there is it named
    assert [w.index for w, v in zip(worlds, out["verdicts"], strict=True)
            if v["label_leakage"] == CAUSE] == [5] and "label_leakage" in worlds[1].hazards
    assert (tmp_path / "diagnosis_bench.md").read_text().startswith("# Diagnosis benchmark")


def test_the_calibration_rule_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each world's metrics here are one statistic, and the timeouts verdict fires when it is at
    least ``TIMEOUT_EXCESS``: the rule picks the value with the best detection among those with
    at most 5% false alarms, on the calibration half only."""
    def fake(m: dict | None) -> dict[str, str] | None:
        if m is None:
            return None
        out = {k: "ruled_out" for k in D.VERDICT_HAZARD}
        out["timeouts"] = CAUSE if m["x"] >= V.TIMEOUT_EXCESS else "ruled_out"
        return out
    monkeypatch.setattr(D, "statuses", fake)
    present = [0.006, 0.012, 0.03, 0.2]  # excess where the SLA was tight
    absent = [0.0] * 36 + [0.007, 0.011]  # 2 of 38 with some excess anyway (5.3% at 0.005)
    worlds, metrics = [], []
    for i, x in enumerate(present + absent):
        hazards = {"timeouts": 8.0} if i < len(present) else {}
        worlds.append(_world(2 * i, "ab", hazards))  # even: the calibration half
        metrics.append({"x": x})
    worlds.append(_world(1, "ab", {"timeouts": 8.0}))  # held out: never read by the rule
    metrics.append({"x": 1.0})
    c = D.calibrate(worlds, metrics)["timeouts"]
    rows = {r["value"]: r for r in c["table"]}
    assert rows[0.005]["false_alarm"]["named"] == 2 and rows[0.005]["detection"]["named"] == 4
    assert rows[0.01]["false_alarm"]["named"] == 1 and rows[0.01]["detection"]["named"] == 3
    # 0.005 finds all four but alarms in 5.3% of worlds: 0.01 (3 of 4, 2.6%) is chosen
    assert c["chosen"] == 0.01 and c["current"] == V.TIMEOUT_EXCESS
    assert V.TIMEOUT_EXCESS == c["current"]  # the rules are left as they were
    with D.threshold("TIMEOUT_EXCESS", 0.5):
        assert V.TIMEOUT_EXCESS == 0.5
    assert V.TIMEOUT_EXCESS == c["current"]


def test_bots_count_as_the_hazard_only_where_they_carry_the_win() -> None:
    w = _world(3, "ab", {"outlier_domination": 0.001})

    def conc(win: float | None, humans: float | None) -> dict:
        return {"offline": {"models": {"treatment": {"concentration": {
            "auction_winner": {"win": win, "win_unflagged": humans}}}}}}
    assert B.with_truth(w, conc(0.10, 0.04)).hazards == {"outlier_domination": 0.001}
    kept = B.with_truth(w, conc(0.10, 0.06))  # most of the win is the humans'
    assert kept.hazards == {} and kept.dormant == ("outlier_domination",)
    assert D.kind_of(kept) == "ab_hazards"  # bots were injected: not a clean A/B
    assert B.with_truth(w, conc(0.04, 0.0)).hazards == {}  # no win to carry
    assert B.with_truth(w, None).hazards == {}  # a failed run
    clean = _world(5, "ab", {})
    assert B.with_truth(clean, conc(0.1, 0.0)) is clean and D.kind_of(clean) == "ab_clean"


def test_a_ramp_is_drawn_from_its_own_stream() -> None:
    """About 30% of worlds (A/A and A/B) ramp with an exposure twin; the ramp's draws leave every
    other draw of the world as it is (a world without a ramp is the previous library's)."""
    worlds = B.library(200)
    ramped = [w for w in worlds if w.ramp]
    assert 0.2 < len(ramped) / len(worlds) < 0.4
    assert {w.design for w in ramped} == {"aa", "ab"}
    for w in ramped:
        first, mid, last = w.ramp
        assert 0.05 <= first <= 0.3 and mid == 0.5 and 0.6 <= last <= 0.9
        exp = w.overlay["experiment"]
        assert exp["exposure_twin"] is True
        assert [s["day"] for s in exp["ramp"]] == list(B.RAMP_DAYS)
    flat = B.RAMP_P
    try:
        B.RAMP_P = 0.0
        for w in ramped[:10]:
            plain = B.draw_world(w.index)
            assert not plain.ramp and plain.hazards == w.hazards
            exp = dict(w.overlay["experiment"])
            exp.pop("exposure_twin")
            exp["ramp"] = [{"day": 0.0, "share": 0.5}]
            assert plain.overlay == {**w.overlay, "experiment": exp}
    finally:
        B.RAMP_P = flat


def _exposure(ramped: float, held: float) -> dict:
    def steps(last: float) -> list[dict]:  # three steps, as the library's ramps
        return [{"step": 0, "l1_calibration_true": 1.3}, {"step": 1, "l1_calibration_true": 1.2},
                {"step": 2, "l1_calibration_true": last}]
    return {"exposure": {"treatment": steps(ramped)}, "exposure_twin": {"treatment": steps(held)}}


def test_exposure_bias_is_present_where_the_true_miscalibration_closes_under_the_ramp() -> None:
    assert B.exposure_closing(_exposure(1.05, 1.25)) == pytest.approx(
        math.log(1.25) - math.log(1.05))
    assert B.exposure_closing(_exposure(0.95, 1 / 0.95)) == pytest.approx(0.0, abs=1e-12)
    assert B.exposure_closing({"exposure": {"treatment": []}}) is None
    assert B.exposure_closing(None) is None
    # steps are matched by number: a twin without the last step's clicks gives no truth
    gap = _exposure(1.05, 1.25)
    gap["exposure_twin"]["treatment"][-1]["l1_calibration_true"] = None
    assert B.exposure_closing(gap) is None
    gap["exposure"]["treatment"][-1]["l1_calibration_true"] = None  # the ramp's last: step 1
    assert B.exposure_closing(gap) == pytest.approx(0.0)
    w = replace(_world(3, "ab", {}), ramp=(0.1, 0.5, 0.8))
    assert B.with_truth(w, _exposure(1.05, 1.25)).hazards == {"exposure_bias": pytest.approx(
        math.log(1.25 / 1.05), abs=1e-4)}
    near = B.with_truth(w, _exposure(1.05, 1.05 * math.exp(0.04)))  # closes 0.04 < 0.05
    assert near.hazards == {} and near.dormant == () and D.kind_of(near) == "ab_clean"
    # without a ramp there is no exposure read-out to judge, whatever the metrics say
    assert B.with_truth(_world(3, "ab", {}), _exposure(1.05, 1.25)).hazards == {}
    # an A/A world's arms run one model: a closing there is not exposure bias
    aa = replace(_world(3, "aa", {}), ramp=(0.1, 0.5, 0.8))
    assert B.with_truth(aa, _exposure(1.05, 1.25)).hazards == {}


def test_a_run_is_scored_as_the_world_its_config_holds(tmp_path: Path) -> None:
    w = B.draw_world(11)  # a ramped world
    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"scenario": "v2w00011", "status": "complete"}))
    (run / "metrics.json").write_text(json.dumps({"x": 1}))
    plain = copy.deepcopy(w.overlay)
    plain["experiment"]["ramp"] = [{"day": 0.0, "share": 0.5}]
    del plain["experiment"]["exposure_twin"]
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(plain | {"extra": 1}))
    with pytest.raises(ValueError, match="did not run the config of 'v3w00011': `experiment.ramp`"):
        B.world_metrics(run, w)  # the same index, drawn without its ramp
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(w.overlay | {"extra": 1}))
    assert B.world_metrics(run, w) == {"x": 1}  # another version's name, this world's config
    # settings under every world are part of its config: a smaller world is another world
    with pytest.raises(ValueError, match="`world.n_users` differs"):
        B.world_metrics(run, w, base=["world.n_users=400"])
    small = copy.deepcopy(w.overlay)
    small.setdefault("world", {})["n_users"] = 400
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(small))
    assert B.world_metrics(run, w, base=["world.n_users=400"]) == {"x": 1}
    # one value spelled as a typed config and a command line spell it (16000.0 and 16000, "1"
    # and 1) is the same value; another value is not
    assert B._same(16000.0, 16000) and B._same("1", 1) and not B._same(True, 1)
    assert not B._same("auto", 1) and not B._same(0.5, 0.25)
    # a world's own keys win over the base (as write_library writes them)
    assert B.world_metrics(run, w, base=["world.n_users=400", "days=0.25"]) == {"x": 1}


def test_aa_coverage_by_hand() -> None:
    worlds = [_world(1, "aa", {}), _world(3, "aa", {}), _world(5, "ab", {}), _world(0, "aa", {})]
    iv = [(-0.1, 0.1), (0.01, 0.2), (-0.3, -0.1), (0.02, 0.04)]
    metrics = [{"lift_stratified": {"cpa": {"low": lo, "high": hi}}} for lo, hi in iv]
    cov = D.aa_coverage(worlds, metrics)
    assert cov["held_out"] == {"covered": 1, "worlds": 2, "undefined": 0,
                               "rate": 0.5}  # the A/B world not counted
    assert cov["calibration"] == {"covered": 0, "worlds": 1, "undefined": 0, "rate": 0.0}
    metrics[0] = {"lift_stratified": {"cpa": {"low": None, "high": None}}}
    assert D.aa_coverage(worlds, metrics)["held_out"] == {"covered": 0, "worlds": 1,
                                                         "undefined": 1, "rate": 0.0}
