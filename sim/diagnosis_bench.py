"""The diagnosis benchmark: how often is the report right, on worlds whose causes are known?

``python -m sim.diagnosis_bench --size N --offset K --out DIR`` draws a library of N worlds
(indices K .. K+N-1), runs each through Hydra (``python -m sim -m scenario=...`` with the
library on Hydra's search path, so ``--launcher joblib`` or ``ray`` scales it like any sweep),
reads each run's report verdicts and scores them against what was injected. It writes
``DIR/diagnosis_bench.md``, ``DIR/diagnosis_bench.json`` and ``DIR/plots/detection.png`` (each
verdict's detection by magnitude on the held-out half, its false-alarm rate beside it).

**The library** (:func:`draw_world`). World ``i`` is drawn from its own generator
(``numpy.random.default_rng([LIBRARY_SEED, i])``), so a world does not depend on the library's
size or offset, and its simulator seed is ``i``. Even indices are the *calibration half* (where
thresholds may be chosen), odd ones the *held-out half* (where scores are reported). Each world:

* one simulated day, ``traffic.requests_per_day`` log-uniform in [20,000, 60,000],
  ``world.quality_sigma`` uniform in [0.6, 1.0], releases every 6 hours (so a day has three);
* the design: an A/A test (probability 0.25: the treatment overlay is empty and nothing is
  injected) or an A/B test whose treatment is genuinely better offline (``dhen`` reading the
  offsite conversion counters, against a ``simple`` control without them, as in the headline),
  clean (probability 0.15: nothing injected) or with hazards (0.6);
* deploys synchronous (batch builds at every release, deployed at once, the query tower rolled
  out with the release) unless version skew is injected;
* in A/B worlds with hazards, each hazard of :data:`HAZARDS` injected independently with
  probability 0.35 (none at all in about 7% of them), at a magnitude drawn from its stated range
  (a knob of the mechanism, never a penalty):

  - ``timeouts``: the treatment's query-tower SLA, uniform in [4, 16] ms (default 20);
  - ``parity_gap``: the counters the treatment reads are not onboarded to the L1 embedding path;
  - ``version_skew``: streaming enrichment and a ``large`` tier built every 12 hours and deployed
    after a delay uniform in [0.05, 0.5] day, the query tower live an hour after each release;
  - ``serving_path``: the treatment's index is ``IVF64,Flat`` probing nprobe lists, nprobe one
    of 1, 2, 4, 8, 16;
  - ``model_version``: the treatment's serving pointer lags 1 or 2 releases;
  - ``recall_ceiling``: retrieval returns only as many candidates as L1 keeps
    (``funnel.k_retrieval = k_l1``): L1's cut passes everything, so a better L1 cannot change
    what reaches L2 (L2's work, and so its latency, is unchanged);
  - ``label_leakage``: the treatment's training pipeline joins the offsite conversion counters
    at label time on a share of its converted rows, uniform in [0.1, 1.0]
    (``features.label_join_share``);
  - ``outlier_domination``: bots (``world.bot_share`` log-uniform in [0.0003, 0.003], each at
    100 times a human's activity), the control's L1 query tower blind to the request rate that
    identifies them and the treatment's reading it. Bots are the mechanism, not the cause: the
    hazard counts as present only where the bots' rows carry the win (the treatment's offline
    log_mae win on ``auction_winner`` is at least 5% and less than half of it remains on the
    humans' rows, ground truth the run logs beside the estimate, :func:`with_truth`); a world
    with bots whose win is mostly the humans' counts as one without the hazard.

* a ramp, in 30% of worlds (A/A and A/B; drawn from a stream of its own, so a world without one
  is the same world as in the previous version of the library): the treatment's share at
  ``day`` 0, 0.25 and 0.5 is uniform in [0.05, 0.3], then 0.5, then uniform in [0.6, 0.9], with
  pooled training and the exposure twin (the share held at the first step's). Exposure bias is
  not injected but measured: it counts as present in an A/B world where the treatment's *true*
  miscalibration (L1's pCVR over the true conversion probabilities of its clicks, no draw's
  noise) at the last step is lower under the ramp than in the twin by at least
  :data:`EXPOSURE_TRUE` (:func:`exposure_closing`): the causal effect of owning more of the
  training data on this world's model, whatever its route.

Verdicts with no hazard in the library (``traffic``, ``offline_eval``, ``metric_mismatch``,
``mix_shift``) are scored only for how often they fire in each kind of world; the A/A worlds
also give how often the CPA lift's interval covers 0 (what every "could be noise" rests on). A
world's name carries the library's version (``v3w00040``). A run is scored as the world whose
config it holds: its saved ``.hydra/config.yaml`` must hold the world's keys over the settings
under every world, or it is refused, naming the key that differs. So a run of a world that
changed between versions of the library is refused, not mis-scored, and the run of a world that
did not change is scored the same under either version.

**Scores** (:func:`score`), on each half: for each verdict with a hazard, its *detection rate*
(named where the hazard was injected, by magnitude bin) and its *false-alarm rate* where it was
not, separately in A/A worlds, clean A/B worlds (nothing injected) and A/B worlds with other
hazards; for every verdict, how often it fires in each kind of world; and a *confusion table*:
for each injected hazard, how often each verdict fires in the worlds that have it, a verdict with
a hazard of its own counted only over those worlds where its own hazard is absent (so a cell off
the diagonal is the hazard's cross-firing, not a co-injected hazard's detection).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sim.config import ConfigError
from sim.config.store import check_overrides
from sim.launch import LAUNCHERS, multirun
from sim.logs.writer import write_json_atomic, write_text_atomic
from sim.report.diagnosis import (
    HAZARDS,
    aa_coverage,
    calibrate,
    render,
    rescored,
    score,
    statuses,
)
from sim.report.plots import bench_detection
from sim.report.rates import held_out_rates

LIBRARY_SEED = 20261205
LIBRARY_VERSION = 3  # in every world's name
RAMP_P = 0.3  # share of worlds (A/A and A/B) with a ramp and its exposure twin
RAMP_DAYS = (0.0, 0.25, 0.5)  # the ramp's steps; the first share drawn, then 0.5, then the last
AA_SHARE = 0.25  # share of A/A worlds
CLEAN_SHARE = 0.15  # share of A/B worlds drawn with no hazard
HAZARD_P = 0.35  # each hazard's probability in the other A/B worlds
NPROBES = (1, 2, 4, 8, 16)
OFFSITE = "offsite_conversions"
FAMILIES_NO_OFFSITE = ["base", "targeting", "annotations", "image_embedding"]


@dataclass(frozen=True, kw_only=True)
class BenchWorld:
    """One world of the library: what was drawn, and the config overlay that makes it."""

    index: int
    half: str  # "calibration" or "held_out"
    design: str  # "aa" or "ab"
    hazards: dict[str, float]  # injected hazard -> its magnitude (the knob's value)
    overlay: dict[str, Any] = field(repr=False)  # nested config keys, a scenario file's body
    # injected mechanisms that did not make their hazard present (bots whose rows do not carry
    # the win: :func:`with_truth`); the world still counts as an A/B with hazards
    dormant: tuple[str, ...] = ()
    ramp: tuple[float, ...] = ()  # the shares of a ramped world's steps (with an exposure twin)

    @property
    def name(self) -> str:
        return f"v{LIBRARY_VERSION}w{self.index:05d}"


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[last] = value


def draw_world(index: int) -> BenchWorld:
    """World ``index`` of the library (see the module docstring for the distributions)."""
    rng = np.random.default_rng([LIBRARY_SEED, index])
    o: dict[str, Any] = {}
    _set(o, "seed", index)
    _set(o, "days", 1.0)
    _set(o, "traffic.requests_per_day", float(round(math.exp(rng.uniform(math.log(2e4),
                                                                          math.log(6e4))))))
    _set(o, "world.quality_sigma", round(float(rng.uniform(0.6, 1.0)), 3))
    for key, value in {"releases.interval_s": 21600.0,
                       "releases.train_window_s": "${releases.interval_s}",
                       "releases.label_wait_s": 7200.0, "releases.query_rollout_delay_s": 0.0,
                       "index.build_mode": "batch",
                       "index.large_build_interval_s": "${releases.interval_s}",
                       "index.large_deploy_s": 0.0, "index.fresh_deploy_s": 0.0,
                       "progress": "off"}.items():
        _set(o, key, value)
    kind = rng.random()
    design = "aa" if kind < AA_SHARE else "ab"
    _set(o, "experiment.arms", ["control", "treatment"])
    _set(o, "experiment.ramp", [{"day": 0.0, "share": 0.5}])
    hazards: dict[str, float] = {}
    if design == "ab":
        _set(o, "models.l1_features", FAMILIES_NO_OFFSITE)
        _set(o, "experiment.treatment.models.l1_family", "dhen")
        _set(o, "experiment.treatment.models.l1_features", [*FAMILIES_NO_OFFSITE, OFFSITE])
        draws = rng.random(len(HAZARDS))
        magnitudes = rng.random(len(HAZARDS))  # drawn for every hazard: one stream per world
        for h, d, u in zip(HAZARDS, draws, magnitudes, strict=True):
            if kind >= AA_SHARE + CLEAN_SHARE and d < HAZARD_P:
                hazards[h] = _inject(o, h, float(u))
    # the ramp from a stream of its own: a world without one is the previous version's world
    ramp_rng = np.random.default_rng([LIBRARY_SEED, index, 1])
    ramp: tuple[float, ...] = ()
    if ramp_rng.random() < RAMP_P:
        ramp = (round(float(ramp_rng.uniform(0.05, 0.3)), 3), 0.5,
                round(float(ramp_rng.uniform(0.6, 0.9)), 3))
        _set(o, "experiment.ramp", [{"day": d, "share": s} for d, s in zip(RAMP_DAYS, ramp,
                                                                           strict=True)])
        _set(o, "experiment.exposure_twin", True)
    half = "calibration" if index % 2 == 0 else "held_out"
    return BenchWorld(index=index, half=half, design=design, hazards=hazards, overlay=o, ramp=ramp)


def _inject(o: dict[str, Any], hazard: str, u: float) -> float:
    """Set ``hazard``'s mechanism in overlay ``o`` at the magnitude quantile ``u``; return the
    magnitude (the knob's value; 1 for a hazard that is on or off)."""
    if hazard == "timeouts":
        sla = round(4.0 + 12.0 * u, 2)
        _set(o, "experiment.treatment.latency.sla_ms.query_tower", sla)
        return sla
    if hazard == "parity_gap":
        _set(o, f"features.onboarding.{OFFSITE}", ["training_logs", "l2_feature_store"])
        return 1.0
    if hazard == "version_skew":
        days = round(0.05 + 0.45 * u, 3)
        for key, value in {"index.build_mode": "streaming", "index.large_deploy_s": days * 86400.0,
                           "index.large_build_interval_s": 43200.0,
                           "releases.query_rollout_delay_s": 3600.0}.items():
            _set(o, key, value)
        return days
    if hazard == "serving_path":
        nprobe = NPROBES[min(int(u * len(NPROBES)), len(NPROBES) - 1)]
        _set(o, "experiment.treatment.index.factory", "IVF64,Flat")
        _set(o, "experiment.treatment.index.nprobe", nprobe)
        return float(nprobe)
    if hazard == "model_version":
        lag = 1 if u < 0.5 else 2
        _set(o, "experiment.treatment.releases.pointer_lag", lag)
        return float(lag)
    if hazard == "label_leakage":
        share = round(0.1 + 0.9 * u, 3)
        _set(o, "experiment.treatment.features.label_join_share", share)
        return share
    if hazard == "outlier_domination":
        share = round(math.exp(math.log(3e-4) + u * math.log(10.0)), 5)
        _set(o, "world.bot_share", share)
        _set(o, "models.l1_user_features", ["latent", "segment"])
        _set(o, "experiment.treatment.models.l1_user_features", ["latent", "segment", "request_rate"])
        return share
    if hazard == "recall_ceiling":
        _set(o, "funnel.k_retrieval", "${funnel.k_l1}")  # L1's cut passes everything it is given
        return 1.0
    raise ValueError(f"unknown hazard {hazard!r}")


DOMINATED = 0.5  # bots carry the win when less than this share of it remains on humans' rows
EXPOSURE_TRUE = 0.05  # exposure bias is present when the true miscalibration closes this much


def exposure_closing(m: dict[str, Any] | None) -> float | None:
    """Ground truth for exposure bias in a ramped world: how much lower the treatment's true
    miscalibration ``|ln(l1_calibration_true)|`` (L1's pCVR over the true conversion
    probabilities, no draw's noise) is at the ramp's last step than in its exposure twin at the
    same step (positive: owning more of the training data helped). None without the read-outs."""
    ramped = [s for s in (((m or {}).get("exposure") or {}).get("treatment") or [])
              if s.get("l1_calibration_true")]
    held = {s["step"]: s for s in (((m or {}).get("exposure_twin") or {}).get("treatment") or [])
            if s.get("l1_calibration_true")}
    if len(ramped) < 2 or ramped[-1]["step"] not in held:
        return None  # matched by step, as the verdict matches its estimates
    a, b = ramped[-1]["l1_calibration_true"], held[ramped[-1]["step"]]["l1_calibration_true"]
    return abs(math.log(b)) - abs(math.log(a))


def with_truth(w: BenchWorld, m: dict[str, Any] | None) -> BenchWorld:
    """``w`` with its hazards as measured where the injection is a mechanism, not the cause:

    * ``outlier_domination`` stays only where the bots' rows carry the treatment's offline win
      (the ``flag`` fields of ``offline.models.treatment.concentration``);
    * ``exposure_bias`` is added in a ramped A/B world where the treatment's true miscalibration
      closes by at least :data:`EXPOSURE_TRUE` under the ramp (:func:`exposure_closing`). Not in
      an A/A world: its arms run the same model, so no arm learns from another's exposures, and
      a closing there is the ramp moving the world (budget-split budgets, different data, a
      different fit), not exposure bias.

    A hazard taken away is ``dormant``: the world still counts as one with hazards."""
    hazards, dormant = dict(w.hazards), list(w.dormant)
    if "outlier_domination" in hazards:
        c = (((m or {}).get("offline") or {}).get("models", {}).get("treatment") or {}).get(
            "concentration", {}).get("auction_winner") or {}
        win, humans = c.get("win"), c.get("win_unflagged")
        if not (win is not None and humans is not None and win >= 0.05
                and humans < DOMINATED * win):
            del hazards["outlier_domination"]
            dormant.append("outlier_domination")
    if (w.design == "ab" and w.ramp and (closing := exposure_closing(m)) is not None
            and closing >= EXPOSURE_TRUE):
        hazards["exposure_bias"] = round(closing, 4)
    if hazards == w.hazards and tuple(dormant) == w.dormant:
        return w
    return replace(w, hazards=hazards, dormant=tuple(dormant))


def library(size: int, offset: int = 0) -> list[BenchWorld]:
    """Worlds ``offset`` .. ``offset + size - 1``."""
    if size < 1 or offset < 0:
        raise ValueError(f"a library needs size >= 1 and offset >= 0, got {size} and {offset}")
    return [draw_world(i) for i in range(offset, offset + size)]


def write_library(worlds: Sequence[BenchWorld], root: Path, base: Sequence[str] = ()) -> Path:
    """Each world as ``root/library/scenario/<name>.yaml`` (a Hydra search-path directory) and
    the list as ``root/library/worlds.json``; returns the search-path directory. ``base``:
    ``key=value`` settings under every world (a world's own keys win, so a setting can make the
    worlds smaller but never undo an injected hazard)."""
    lib = root / "library"
    under = OmegaConf.from_dotlist(list(base))
    for w in worlds:
        body = OmegaConf.to_yaml(OmegaConf.merge(under, OmegaConf.create(w.overlay)))
        write_text_atomic(lib / "scenario" / f"{w.name}.yaml", "# @package _global_\n" + body)
    write_json_atomic(lib / "worlds.json", {"base": list(base),
                                            "worlds": [asdict(w) | {"name": w.name} for w in worlds]})
    return lib


def run_library(worlds: Sequence[BenchWorld], root: Path, launcher: str = "joblib",
                jobs: int = 1, base: Sequence[str] = (), hydra: Sequence[str] = ()) -> Path:
    """Run every world as one Hydra multirun into ``root/runs`` (job ``k`` is ``worlds[k]``):
    ``jobs`` worlds at a time on local processes (``joblib``), or as tasks of a local Ray
    instance (``ray``; how many run at once is Ray's). ``base`` goes under
    every world (:func:`write_library`), ``hydra`` (``hydra.*`` overrides) to the command. A
    world that fails is a job whose manifest says so; the sweep goes on (scored as failed)."""
    lib = write_library(worlds, root, base)
    return multirun([w.name for w in worlds], lib, root / "runs", launcher, jobs, hydra)


def _differs(config: Any, overlay: Any, at: str = "") -> str | None:
    """The first dotted key of ``overlay`` whose value ``config`` (a run's saved, unresolved
    config) does not hold, or None when it holds every one."""
    if isinstance(overlay, dict):
        for k, v in overlay.items():
            key = f"{at}.{k}" if at else str(k)
            if not isinstance(config, dict) or k not in config:
                return key
            if (bad := _differs(config[k], v, key)) is not None:
                return bad
        return None
    return None if _same(config, overlay) else (at or "<root>")


def _same(saved: Any, wanted: Any) -> bool:
    """Whether a saved config value is the value asked for, across the spellings a typed config
    and a command line give one value (16000 and 16000.0; a number and its string, as in
    ``threads.torch=1``)."""
    if isinstance(saved, bool) or isinstance(wanted, bool):  # True == 1 in Python: not here
        return type(saved) is type(wanted) and saved == wanted
    if saved == wanted:
        return True
    try:
        return float(saved) == float(wanted)
    except (TypeError, ValueError):
        return False


def world_metrics(run_dir: Path, world: BenchWorld,
                  base: Sequence[str] = ()) -> dict[str, Any] | None:
    """The ``metrics.json`` of the finished run of ``world`` under the settings ``base``
    (:func:`write_library`; None if the run did not complete). A run whose saved config
    (``.hydra/config.yaml``) does not hold the world's keys over ``base`` is an error naming
    the first key that differs; so is, for a run without a saved config, a run of another
    world's name. A run is scored as the world whose config it ran: a world that is the same in
    two versions of the library can be scored from either's run."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return None
    info = json.loads(manifest.read_text())
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.exists():
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
        want = OmegaConf.to_container(OmegaConf.merge(OmegaConf.from_dotlist(list(base)),
                                                      OmegaConf.create(world.overlay)),
                                      resolve=False)
        if (key := _differs(config, want)) is not None:
            raise ValueError(f"{run_dir} ({info.get('scenario')!r}) did not run the config of "
                             f"{world.name!r}: `{key}` differs (score a library's runs with "
                             "the library's --size, --offset and overrides)")
    elif info.get("scenario") not in (None, world.name):
        raise ValueError(f"{run_dir} is a run of {info.get('scenario')!r}, not of {world.name!r}: "
                         "score a library's runs with the library's --size and --offset")
    if info.get("status") != "complete":
        return None
    return dict(json.loads((run_dir / "metrics.json").read_text()))


def world_verdicts(run_dir: Path, world: BenchWorld,
                   base: Sequence[str] = ()) -> dict[str, str] | None:
    """Each verdict's status in the finished run of ``world`` (see :func:`world_metrics`)."""
    return statuses(world_metrics(run_dir, world, base))


# the threshold each verdict with a hazard is calibrated on, and the round values tried
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.diagnosis_bench", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=200, help="worlds in the library")
    p.add_argument("--offset", type=int, default=0, help="index of the first world")
    p.add_argument("--out", type=Path, required=True, help="directory for the runs and the scores")
    p.add_argument("--launcher", default="joblib", choices=LAUNCHERS,
                   help="Hydra launcher: local processes, or a local Ray instance")
    p.add_argument("--jobs", type=int, default=1, help="worlds at a time (joblib, ray)")
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out")
    p.add_argument("--rates-out", type=Path, default=None,
                   help="also write the held-out half's rates as a report's rates file "
                        "(sim/report/verdict_rates.json: printed beside each verdict)")
    p.add_argument("overrides", nargs="*",
                   help="key=value under every world (e.g. a smaller world; a world's own keys "
                        "win), and hydra.* overrides for the sweep")
    args = p.parse_args(argv)
    if args.size < 1 or args.offset < 0 or args.jobs < 1:
        p.error(f"--size and --jobs must be at least 1 and --offset at least 0, got --size "
                f"{args.size}, --offset {args.offset}, --jobs {args.jobs}")
    hydra = [o for o in args.overrides if o.lstrip("+").startswith("hydra")]
    base = [o for o in args.overrides if o not in hydra]
    if bad := [o for o in base if "=" not in o or o.startswith("=")]:
        p.error(f"an override is key=value, got {bad}")
    try:
        check_overrides(base)  # here, before they are written into every world's scenario
    except ConfigError as exc:
        p.error(str(exc))
    worlds = library(args.size, args.offset)
    sweep = args.out / "runs"
    if not args.score_only:
        run_library(worlds, args.out, args.launcher, args.jobs, base, hydra)
    try:
        metrics = [world_metrics(sweep / str(k), w, base) for k, w in enumerate(worlds)]
    except ValueError as exc:
        p.error(str(exc))
    results = [statuses(m) for m in metrics]
    truth = [with_truth(w, m) for w, m in zip(worlds, metrics, strict=True)]
    scores = score(truth, results)
    calibration = calibrate(truth, metrics)
    chosen = {c["constant"]: c["chosen"] for c in calibration.values()}
    scores["calibration"] = calibration
    scores["at_chosen"] = rescored(truth, metrics, chosen)["halves"]["held_out"]["rates"]
    scores["bots"] = {"injected": sum("outlier_domination" in w.hazards for w in worlds),
                      "carrying_the_win": sum("outlier_domination" in w.hazards for w in truth)}
    scores["ramps"] = {"worlds": sum(bool(w.ramp) for w in worlds),
                       "exposure_bias_present": sum("exposure_bias" in w.hazards for w in truth),
                       "closing": [exposure_closing(m) for w, m in zip(worlds, metrics, strict=True)
                                   if w.ramp]}
    scores["aa_cpa_coverage"] = aa_coverage(worlds, metrics)
    command = " ".join(["python -m sim.diagnosis_bench", f"--size {args.size}",
                        f"--offset {args.offset}", *args.overrides])
    write_json_atomic(args.out / "diagnosis_bench.json",
                      {"command": command, "base": base,
                       "worlds": [asdict(w) | {"name": w.name, "hazards_measured": t.hazards}
                                  for w, t in zip(worlds, truth, strict=True)],
                       "verdicts": results, "scores": scores})
    if args.rates_out is not None:
        name = (f"library v{LIBRARY_VERSION}, worlds {args.offset}-{args.offset + args.size - 1}, "
                f"held-out half ({scores['halves']['held_out']['worlds']} worlds)")
        write_json_atomic(args.rates_out, held_out_rates(scores, name, command))
    (args.out / "plots").mkdir(parents=True, exist_ok=True)
    bench_detection(scores, args.out / "plots" / "detection.png")
    path = args.out / "diagnosis_bench.md"
    write_text_atomic(path, render(scores, command))
    print(f"diagnosis bench: {path} ({scores['failed']} of {len(worlds)} worlds failed)")
    return 0 if scores["failed"] < len(worlds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
