"""Fit the statistics the funnel's selection makes, through the simulator.

Clicks and conversions per impression, position decay and budget exhaustion are *emergent*: the
winners of each auction are chosen on affinity, creative quality and the models' predictions, so
the realised CTR is several times the base logit's and no knob can be set from a target by hand.
They are fitted by running worlds:

* **the search**: Bayesian optimisation with optuna's Gaussian-process sampler (``GPSampler``: a
  Matérn-5/2 GP with a noise term, log expected improvement, and batches of trials asked before
  the previous ones are told), over the knobs of :data:`KNOBS` the targets name (:func:`searched`),
  in a box the base world places: the first trial runs the base world, and each logit's box is
  centred where its selection lift puts the target, a slot factor's where the base world's
  realised-to-set ratio does, the budget's on the base value (:func:`search_box`). Each trial is a world
  per fit seed (the same seeds for every trial: common random numbers, so
  the loss is smooth in the knobs), run as one Hydra multirun on the launcher (``joblib`` or
  ``ray``: a local Ray instance, :mod:`sim.launch`). The loss is the mean squared error of each
  statistic in units of its tolerance (:func:`sim.fit_targets.z_score`);
* **root steps** after the GP's trials (:func:`root_step`, ``polish`` rounds): from the best
  trial, each knob by its statistic's error over the slope the trials show near it; the best
  trial of all is the fit.
* **the fidelity check** (:mod:`sim.fit_check`): the fitted world at fresh seeds; each target
  statistic against the fitted world's median and range (:mod:`sim.calibrate` writes the table).
* **the recovery test** (:func:`sim.fit_check.recovery`): statistics made by the simulator at
  knob values drawn at random and not told to the search, fitted back; each knob within
  :attr:`Knob.tolerance`.

Why optuna and not simulation-based inference: a world of the default size takes about a minute,
so a fit can afford tens of worlds, not the thousands an amortised posterior (``sbi``) needs to
train; and Hydra's own Optuna sweeper pins optuna below 3 (no GP sampler, no batched asks), so
the search asks optuna for trials itself and runs them through Hydra's launchers.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import OmegaConf

from sim.fit_targets import (
    MISSING_Z,
    loss,
    mean_statistics,
)
from sim.launch import multirun
from sim.logs.writer import write_text_atomic
from sim.market_stats import read_logs, statistics

BOX_LOGIT, BOX_POSITION, BOX_BUDGET = 1.5, 0.2, 10.0  # the search box about its centre


@dataclass(frozen=True, kw_only=True)
class Knob:
    """A world key the search sets: ``world.<key>`` (element ``index`` of a list key), searched in
    ``[low, high]`` (on a log scale where ``log``); ``tolerance`` is how close the recovery test
    asks it to come back (absolute, or relative where ``log``), and ``recover`` the box the
    recovery test draws its unknown values from."""

    key: str
    index: int | None = None
    low: float
    high: float
    log: bool = False
    tolerance: float
    recover: tuple[float, float]


KNOBS = {
    "base_ctr_logit": Knob(key="base_ctr_logit", low=-10.0, high=0.0, tolerance=0.15,
                           recover=(-7.0, -3.0)),
    "base_cvr_logit": Knob(key="base_cvr_logit", low=-10.0, high=0.0, tolerance=0.15,
                           recover=(-6.0, -2.5)),
    "position_ctr_1": Knob(key="position_ctr", index=1, low=0.05, high=1.0, tolerance=0.05,
                           recover=(0.6, 0.9)),
    "position_ctr_2": Knob(key="position_ctr", index=2, low=0.05, high=1.0, tolerance=0.05,
                           recover=(0.35, 0.7)),
    "daily_budget_mean": Knob(key="daily_budget_mean", low=10.0, high=20_000.0, log=True,
                              tolerance=0.25, recover=(150.0, 1200.0)),
}
# statistics fitted through the simulator, and knobs that move them but that these statistics
# cannot tell apart from the base logits (they are held at the base world's values)
EMERGENT = ("ctr", "cvr", "conversions_per_impr", "position_ctr_1", "position_ctr_2",
            "budget_exhausted")
CONFOUNDED = ("ctr_affinity", "cvr_affinity", "creative_sigma", "quality_sigma")


def searched(stats: Sequence[str]) -> list[str]:
    """The knobs the emergent statistics ``stats`` identify: ``ctr`` the CTR logit, ``cvr`` the
    CVR logit, conversions per impression whichever of the two the others leave free (the CVR
    logit where it is given alone: the split between clicking and converting is not identifiable
    from it), each position ratio its slot's CTR factor, budget exhaustion the budget level."""
    s = set(stats)
    out = []
    if "ctr" in s or ("conversions_per_impr" in s and "cvr" in s and "ctr" not in s):
        out.append("base_ctr_logit")
    if "cvr" in s or "conversions_per_impr" in s:
        out.append("base_cvr_logit")
    out += [k for k in ("position_ctr_1", "position_ctr_2", "budget_exhausted") if k in s]
    return [("daily_budget_mean" if k == "budget_exhausted" else k) for k in out]


def ordered(world: Mapping[str, Any]) -> bool:
    """Whether a world overlay's slot factors, where it sets them, do not grow down the slots (the
    config refuses a list that does)."""
    pos = world.get("position_ctr")
    return pos is None or all(a >= b for a, b in zip(pos, pos[1:], strict=False))


def knob_values(world: Any, names: Sequence[str]) -> dict[str, float]:
    """The base world's value of each knob (``world``: a config's ``world`` section)."""
    out = {}
    for n in names:
        k = KNOBS[n]
        v = getattr(world, k.key)
        out[n] = float(v[k.index] if k.index is not None else v)
    return out


def world_overlay(values: Mapping[str, float], world: Any) -> dict[str, Any]:
    """``{"world": {...}}`` setting the knobs to ``values`` (a list knob's other elements from
    ``world``, the base world's section)."""
    out: dict[str, Any] = {}
    for n, v in values.items():
        k = KNOBS[n]
        if k.index is None:
            out[k.key] = float(v)
        else:
            lst = out.setdefault(k.key, [float(x) for x in getattr(world, k.key)])
            lst[k.index] = float(v)
    return {"world": out}


@dataclass(kw_only=True)
class Batch:
    """Worlds to run: scenario name -> the overlay over the base scenario."""

    worlds: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_worlds(batch: Batch, root: Path, scenario: str, launcher: str, jobs: int,
               keep: bool = False) -> dict[str, dict[str, float | None] | None]:
    """Run each world of ``batch`` (its overlay over ``scenario``) as one multirun under
    ``root``; return its statistics (None for a world that did not complete). The logs are
    removed once read unless ``keep``."""
    lib = root / "library"
    for name, overlay in batch.worlds.items():
        body = OmegaConf.to_yaml(OmegaConf.create({"defaults": [scenario, "_self_"], **overlay}))
        write_text_atomic(lib / "scenario" / f"{name}.yaml", "# @package _global_\n" + body)
    names = list(batch.worlds)
    if (root / "runs").exists():
        raise FileExistsError(f"{root / 'runs'} already holds runs; give a new --out")
    sweep = multirun(names, lib, root / "runs", launcher, jobs)
    out: dict[str, dict[str, float | None] | None] = {}
    for k, name in enumerate(names):
        d = sweep / str(k)
        try:
            man = json.loads((d / "manifest.json").read_text())
            ok = man.get("status") == "complete" and man.get("scenario") == name
            out[name] = statistics(read_logs(d)) if ok else None
        except (OSError, ValueError):
            out[name] = None
        if not keep and (d / "logs").exists():
            shutil.rmtree(d / "logs")
    return out


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial of the search: its knob values, its statistics (the mean over the fit seeds of
    each statistic; None where a world could not define it, empty where a world failed) and its
    loss (``inf`` for a failed trial)."""

    number: int
    params: dict[str, float]
    loss: float
    statistics: dict[str, float | None]


@dataclass(kw_only=True)
class Search:
    """The search's record: every trial's knob values, statistics and loss, and the best."""

    knobs: list[str]
    trials: list[Trial] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_loss: float = math.inf
    worlds: int = 0
    box: dict[str, tuple[float, float]] = field(default_factory=dict)
    refused: int = 0  # proposals not run: slot factors growing down the slots
    batch: int = 1  # trials asked before the previous ones are told
    polished: int = 0  # trials made by root steps after the GP's
    best_index: int = -1  # the best trial's place in ``trials``


def search(targets: Mapping[str, float], tols: Mapping[str, float], *, base: Any,
           under: Mapping[str, Any], scenario: str, root: Path, trials: int,
           fit_seeds: Sequence[int], launcher: str = "joblib", jobs: int = 1, seed: int = 0,
           polish: int = 0, keep: bool = False, log: Any = None, batch: int = 1) -> Search:
    """Fit the knobs :func:`searched` from ``targets`` (emergent statistics -> value; ``tols``
    their :func:`sim.fit_targets.tolerance`) with ``trials`` trials of optuna's GP sampler (seeded ``seed``);
    the first trial is the base world's knob values (``base``: the composed config). Each trial
    runs ``under`` (the overlay the direct fits and the user's settings make) with its knobs at
    each of ``fit_seeds``; a trial's statistics are their means over the seeds. The GP proposes
    ``batch`` trials before it is told the previous ones' losses; their ``batch`` x ``fit_seeds``
    worlds run ``jobs`` at a time. The search's proposals depend on ``batch``, not on ``jobs`` or
    the launcher; a world's bits do where its threads are ``auto`` (the cores its job is given:
    ``sim.threads``), so the whole fit is the same at any ``jobs`` with ``threads.torch`` and
    ``threads.faiss`` given as numbers in ``under``. Then ``polish`` rounds of
    :func:`root_step` from the best trial so far (its step, and where ``batch`` is 2 or more, the
    same step halved beside it), each recorded
    like a trial: the GP finds the basin, the steps its floor. A round that does not improve on
    the best halves the next round's step (a backtracking line search); a point already run is
    not run again, and the rounds stop when no new point is left."""
    names = searched(list(targets))
    if not names:
        raise ValueError(f"no knob to search for the statistics {sorted(targets)}")
    if not fit_seeds:
        raise ValueError("a search needs at least one fit seed")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    rec = Search(knobs=names)
    start = knob_values(base.world, names)  # trial 0 runs the base world as it is
    if off := {n: v for n, v in start.items() if not KNOBS[n].low <= v <= KNOBS[n].high}:
        raise ValueError(f"the starting world's knobs {off} lie outside the search's ranges "
                         f"{ {n: (KNOBS[n].low, KNOBS[n].high) for n in off} }")

    def run(params: list[dict[str, float]], first: int) -> list[dict[str, float | None]]:
        worlds = Batch()
        for i, p in enumerate(params):
            for s in fit_seeds:
                worlds.worlds[f"t{first + i:03d}_s{s}"] = OmegaConf.to_container(OmegaConf.merge(
                    OmegaConf.create(dict(under)), world_overlay(p, base.world),
                    {"seed": s}))  # type: ignore[assignment]
        stats = run_worlds(worlds, root / f"batch_{first:03d}", scenario, launcher, jobs, keep)
        rec.worlds += len(worlds.worlds)
        return [mean_statistics([stats[f"t{first + i:03d}_s{s}"] for s in fit_seeds])
                for i in range(len(params))]

    def record(number: int, params: dict[str, float], m: dict[str, float | None]) -> float:
        value = loss(m, targets, tols)
        rec.trials.append(Trial(number=number, params=dict(params), loss=value,
                                statistics={n: m.get(n) for n in (*EMERGENT, *targets)}))
        if value < rec.best_loss:
            rec.best, rec.best_loss, rec.best_index = dict(params), value, len(rec.trials) - 1
        if log:
            log(f"trial {number}: loss {value:.4g} " + " ".join(f"{n}={v:.4g}" for n, v in params.items()))
        return value

    first = run([start], 0)[0]  # the base world: where its selection puts the rates
    record(0, start, first)
    if not first:
        raise RuntimeError("the base world of the fit failed; see its run directory under "
                           f"{root / 'batch_000'}")
    box = search_box(start, first, targets)
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        n: optuna.distributions.FloatDistribution(lo, hi, log=KNOBS[n].log) for n, (lo, hi) in box.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(trials, max(4, len(names) + 1)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    rec.batch = batch
    while len(rec.trials) < trials:
        asked = [study.ask(dists) for _ in range(min(batch, trials - len(rec.trials)))]
        # a proposal whose slot factors grow down the slots is a world the config refuses: not
        # run, told to the GP at the loss of a world with every statistic missing
        runnable = [t for t in asked if ordered(world_overlay(t.params, base.world)["world"])]
        got = dict(zip([t.number for t in runnable],
                       run([t.params for t in runnable], len(rec.trials)) if runnable else [],
                       strict=True))
        for t in asked:
            m = got.get(t.number)
            if m is None:
                study.tell(t, math.log1p(MISSING_Z ** 2))
                rec.refused += 1
                continue
            value = record(len(rec.trials), t.params, m)
            if math.isfinite(value):  # the GP models log(1 + loss): the bowl's far walls are
                study.tell(t, math.log1p(value))  # thousands of times its floor
            else:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
    rec.box = box
    slots = [float(x) for x in base.world.position_ctr]
    damping = 1.0
    for _ in range(polish):
        steps = [root_step(rec, targets, damping=d, slots=slots)
                 for d in (damping, damping / 2)[:batch]]
        seen = [t.params for t in rec.trials]
        steps = [p for i, p in enumerate(steps) if p not in seen and p not in steps[:i]]
        if not steps:
            break
        before = rec.best_loss
        for p, m in zip(steps, run(steps, len(rec.trials)), strict=True):
            record(len(rec.trials), p, m)
            rec.polished += 1
        if not rec.best_loss < before:
            damping /= 2
    return rec


def _coord(n: str, v: float) -> float:
    return math.log(v) if KNOBS[n].log else v


def _slope(rec: Search, knob: str, y: Any, lo: float, hi: float, default: float | None) -> float | None:
    """The coefficient of ``knob`` (its log where the knob is on a log scale) in the least-squares
    fit of ``y(trial statistics)`` (None: undefined) on every searched knob, over the finite
    trials nearest the best (2 x (knobs + 1) + 1 of them, distances in units of each knob's
    box, so the slope is the one near the best, not across the whole range); ``default`` where
    there are too few trials or the coefficient lies outside ``[lo, hi]`` (a sign the trials are
    too noisy or too far apart to read it)."""
    names = rec.knobs
    rows = [(t, y(t.statistics)) for t in rec.trials if math.isfinite(t.loss)]
    rows = [(t, v) for t, v in rows if v is not None]
    if len(rows) <= len(names) + 1:
        return default
    width = {n: (_coord(n, rec.box[n][1]) - _coord(n, rec.box[n][0])) if n in rec.box else 1.0
             for n in names}
    best = rec.best

    def far(t: Trial) -> float:
        return sum(((_coord(n, t.params[n]) - _coord(n, best[n])) / (width[n] or 1.0)) ** 2
                   for n in names)
    rows = sorted(rows, key=lambda r: far(r[0]))[:2 * (len(names) + 1) + 1]
    x = np.array([[1.0, *(_coord(n, t.params[n]) for n in names)] for t, _ in rows])
    coef = np.linalg.lstsq(x, np.array([v for _, v in rows]), rcond=None)[0]
    b = float(coef[1 + names.index(knob)])
    return b if lo <= b <= hi else default


def root_step(rec: Search, targets: Mapping[str, float], damping: float = 1.0,
              slots: Sequence[float] | None = None) -> dict[str, float]:
    """A Newton step, knob by knob, from the best trial toward the targets: each knob moves by
    its statistic's error over that statistic's slope in it, times ``damping``. The slopes are
    read from the trials (:func:`_slope`, every searched knob a regressor), within bounds that
    the mechanism sets: a rate's logit rises with its base logit at a slope near 1 (selection
    lifts it by about the same logit whatever the base: 0.5-2 accepted, else 1); a slot's CTR
    ratio with its factor in proportion (log-log slope 1); budget exhaustion falls with the log
    budget at a slope read from the trials alone (held where they show no fall). A logit moves at
    most :data:`BOX_LOGIT` / 2, a slot factor :data:`BOX_POSITION` / 2, the budget a factor
    √:data:`BOX_BUDGET`; each knob stays in its range, and a searched slot factor between its
    neighbours (``slots``: the base world's factors, for the slots not searched), so the slots'
    factors never grow down the slots."""
    m = rec.trials[rec.best_index].statistics
    out = dict(rec.best)
    for n in rec.knobs:
        k = KNOBS[n]
        step = None
        if n in ("base_ctr_logit", "base_cvr_logit"):
            stat = "ctr" if n == "base_ctr_logit" else "cvr"
            t, got = _rate(stat, targets, m), _rate(stat, m, m)
            if t is not None and got is not None:
                def y(s: Mapping[str, float | None], stat: str = stat) -> float | None:
                    r = _rate(stat, s, s)
                    return None if r is None else _logit(r)
                slope = _slope(rec, n, y, 0.5, 2.0, 1.0) or 1.0
                step = float(np.clip((_logit(t) - _logit(got)) / slope, -BOX_LOGIT / 2, BOX_LOGIT / 2))
        elif n.startswith("position_ctr_"):
            ratio = m.get(n)
            if ratio and targets.get(n):
                step = float(np.clip(out[n] * (targets[n] / ratio - 1), -BOX_POSITION / 2, BOX_POSITION / 2))
        elif "budget_exhausted" in targets and (share := m.get("budget_exhausted")) is not None:
            fall = _slope(rec, n, lambda s: s.get("budget_exhausted"), -math.inf, -1e-3, None)
            if fall is not None:
                lg = float(np.clip((targets["budget_exhausted"] - share) / fall,
                                   -math.log(BOX_BUDGET) / 2, math.log(BOX_BUDGET) / 2))
                out[n] = float(np.clip(out[n] * math.exp(damping * lg), k.low, k.high))
        if step is not None:
            out[n] = float(np.clip(out[n] + damping * step, k.low, k.high))
    if slots is not None:  # down the slots: each searched factor at most the one above it and
        pos = list(slots)  # at least the one below
        for n in ("position_ctr_1", "position_ctr_2"):
            if n in out:
                pos[KNOBS[n].index] = out[n]  # type: ignore[index]
        for j in range(1, len(pos)):
            name = f"position_ctr_{j}"
            if name in out:
                below = pos[j + 1] if j + 1 < len(pos) and f"position_ctr_{j + 1}" not in out else 0.0
                pos[j] = out[name] = float(min(max(pos[j], below), pos[j - 1]))
    elif "position_ctr_1" in out and "position_ctr_2" in out:
        out["position_ctr_2"] = min(out["position_ctr_2"], out["position_ctr_1"])
    return out


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _rate(name: str, stats: Mapping[str, float | None],
          world: Mapping[str, float | None]) -> float | None:
    """``ctr`` or ``cvr`` from ``stats``, or where only conversions per impression is there, the
    rate it implies beside the other rate (from ``stats``, else from ``world``'s)."""
    v = stats.get(name)
    if v is None and name in ("ctr", "cvr") and stats.get("conversions_per_impr"):
        other = stats.get("cvr" if name == "ctr" else "ctr") or world.get(
            "cvr" if name == "ctr" else "ctr")
        v = stats["conversions_per_impr"] / other if other else None  # type: ignore[operator]
    return v if v is not None and 0 < v < 1 else None


def search_box(start: Mapping[str, float], first: Mapping[str, float | None],
               targets: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Each knob's search interval, from the base world (knobs ``start``, statistics ``first``):
    selection lifts a rate by about the same logit whatever the base logit, so a logit's box is
    centred where that lift puts the target (± :data:`BOX_LOGIT`); a slot's CTR factor is centred
    where the base world's ratio of realised to set decay puts it (± :data:`BOX_POSITION`); the
    budget level spans a factor :data:`BOX_BUDGET` either side of the base. A knob whose base
    statistic is undefined (no clicks) gets its whole range."""
    def rate(name: str, stats: Mapping[str, float | None]) -> float | None:
        return _rate(name, stats, first)

    box = {}
    for n, x in start.items():
        k = KNOBS[n]
        centre, width = None, None
        if n in ("base_ctr_logit", "base_cvr_logit"):
            stat = "ctr" if n == "base_ctr_logit" else "cvr"
            t, b = rate(stat, targets), rate(stat, first)
            if t is not None and b is not None:
                centre, width = x + _logit(t) - _logit(b), BOX_LOGIT
        elif n.startswith("position_ctr_"):
            b = first.get(n)
            if b:
                centre, width = x * targets[n] / b, BOX_POSITION
        else:
            centre, width = math.log(x), math.log(BOX_BUDGET)
        if centre is None or width is None:
            box[n] = (k.low, k.high)
            continue
        lo_all, hi_all = (math.log(k.low), math.log(k.high)) if k.log else (k.low, k.high)
        lo = max(lo_all, min(centre - width, hi_all - 2 * width))
        hi = min(hi_all, lo + 2 * width)
        box[n] = (math.exp(lo), math.exp(hi)) if k.log else (lo, hi)
    return box
