"""The fitted world against its targets (the fidelity check at fresh seeds) and the recovery
test of the search (:mod:`sim.emergent_fit`): what ``python -m sim.calibrate`` runs once the
search has found its knobs, or instead of it (``--recover N``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sim.emergent_fit import EMERGENT, KNOBS, Batch, run_worlds, search, world_overlay
from sim.fit_targets import _values, tolerance, z_score


def check(overlay: Mapping[str, Any], *, scenario: str, root: Path, seeds: Sequence[int],
          launcher: str = "joblib", jobs: int = 1, keep: bool = False
          ) -> list[dict[str, float | None] | None]:
    """The fitted world (``overlay`` over ``scenario``) at each of ``seeds``: its statistics."""
    batch = Batch(worlds={f"check_s{s}": OmegaConf.to_container(OmegaConf.merge(  # type: ignore[misc]
        OmegaConf.create(dict(overlay)), {"seed": s})) for s in seeds})
    got = run_worlds(batch, root, scenario, launcher, jobs, keep)
    return [got[f"check_s{s}"] for s in seeds]


@dataclass(frozen=True, kw_only=True)
class Fidelity:
    """One target against the fitted world across the check's seeds: the world's value at each
    seed that defines it, their median and range, how many lie within the tolerance and whether
    the median does."""

    target: float
    tolerance: float
    values: list[float]
    median: float | None
    low: float | None
    high: float | None
    within: int
    seeds: int
    median_within: bool


@dataclass(frozen=True, kw_only=True)
class Draw:
    """One draw of the recovery test: the knobs drawn (``truth``), the statistics a world made
    at them (``targets``), the knobs fitted back, the search's best loss, and each knob's error
    (absolute, or the log ratio for a knob on a log scale) and whether it is within its
    tolerance; ``failed`` where the truth's world did not complete."""

    truth: dict[str, float]
    targets: dict[str, float] | None = None
    fitted: dict[str, float] | None = None
    loss: float | None = None
    error: dict[str, float] | None = None
    within: dict[str, bool] | None = None
    worlds: int = 0
    failed: bool = False


def fidelity(targets: Mapping[str, float], tols: Mapping[str, float],
             per_seed: Sequence[dict[str, float | None] | None]) -> dict[str, Fidelity]:
    """Each target against the fitted world across the check seeds: median, range, and how many
    seeds (and whether the median) lie within the statistic's tolerance."""
    out = {}
    for n, t in targets.items():
        vals = _values(per_seed, n)
        zs = [abs(z_score(n, v, t, tols[n])) for v in vals]
        med = float(np.median(vals)) if vals else None
        out[n] = Fidelity(target=t, tolerance=tols[n], values=vals, median=med,
                          low=min(vals) if vals else None, high=max(vals) if vals else None,
                          within=sum(z <= 1 for z in zs), seeds=len(per_seed),
                          median_within=med is not None and abs(z_score(n, med, t, tols[n])) <= 1)
    return out


def recovery(draws: int, *, base: Any, under: Mapping[str, Any], scenario: str, root: Path,
             trials: int, polish: int = 0, launcher: str = "joblib", jobs: int = 1,
             seed: int = 0, log: Any = None, batch: int = 1) -> list[Draw]:
    """The recovery test: ``draws`` knob vectors drawn uniformly from each knob's
    :attr:`Knob.recover` box (the budget log-uniformly, the third slot's factor no higher than the
    second's; a generator seeded ``seed``), the emergent statistics of a world at
    each (world seed ``1000 + i``) as targets, fitted back at the same world seed (what is tested
    is whether the statistics pin the knobs and the search finds them, not the seed-to-seed
    spread, which the fidelity check measures); each knob against its truth and tolerance. Each
    draw's search asks ``batch`` trials at a time (:func:`sim.emergent_fit.search`)."""
    if batch < 1:  # before the truth worlds run
        raise ValueError(f"batch must be at least 1, got {batch}")
    rng = np.random.default_rng(seed)
    names = list(KNOBS)
    truths = []
    for _ in range(draws):
        v = {n: float(rng.uniform(*KNOBS[n].recover)) for n in names}
        lo, hi = KNOBS["daily_budget_mean"].recover
        v["daily_budget_mean"] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        lo, hi = KNOBS["position_ctr_2"].recover  # the slots' factors do not grow down the slots
        v["position_ctr_2"] = float(rng.uniform(lo, min(hi, v["position_ctr_1"])))
        truths.append(v)
    made = Batch(worlds={f"truth_{i}": OmegaConf.to_container(OmegaConf.merge(  # type: ignore[misc]
        OmegaConf.create(dict(under)), world_overlay(v, base.world), {"seed": 1000 + i}))
        for i, v in enumerate(truths)})
    stats = run_worlds(made, root / "truths", scenario, launcher, jobs)
    out = []
    for i, truth in enumerate(truths):
        s = stats[f"truth_{i}"]
        if s is None:
            out.append(Draw(truth=truth, failed=True))
            continue
        targets = {n: v for n in EMERGENT if n != "conversions_per_impr" for v in _values([s], n)}
        tols = {n: tolerance(n, v, None) for n, v in targets.items()}
        rec = search(targets, tols, base=base, under=under, scenario=scenario,
                     root=root / f"draw_{i}", trials=trials, fit_seeds=[1000 + i],
                     launcher=launcher, jobs=jobs, seed=seed + i, polish=polish, log=log,
                     batch=batch)
        err = {n: (abs(math.log(rec.best[n] / truth[n])) if KNOBS[n].log
                   else abs(rec.best[n] - truth[n])) for n in rec.best}
        out.append(Draw(truth=truth, targets=targets, fitted=rec.best, loss=rec.best_loss,
                        error=err, within={n: e <= KNOBS[n].tolerance for n, e in err.items()},
                        worlds=rec.worlds + 1))
    return out


def recovery_report(draws: list[Draw], wall_s: float) -> str:
    """``recovery.md``: each draw's true knobs against the fitted, and per knob how many draws
    came back within its tolerance."""
    names = list(KNOBS)
    lines = ["# Recovery: knobs drawn at random, their statistics fitted back", "",
             "| draw | " + " | ".join(f"`{n}` true → fitted" for n in names) + " | loss |",
             "|---|" + "---|" * (len(names) + 1)]
    for i, d in enumerate(draws):
        if d.failed or d.fitted is None or d.within is None:
            lines.append(f"| {i} | " + " | ".join("failed" for _ in names) + " | |")
            continue
        cells = [f"{d.truth[n]:.4g} → {d.fitted[n]:.4g}" + ("" if d.within[n] else " ✗")
                 if n in d.fitted else f"{d.truth[n]:.4g} → not identifiable" for n in names]
        loss_cell = "failed" if d.loss is None or not math.isfinite(d.loss) else f"{d.loss:.3g}"
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {loss_cell} |")
    ok = [d for d in draws if not d.failed and d.within is not None]
    lines += ["", "| knob | tolerance | draws within |", "|---|---|---|"]
    for n in names:
        k = KNOBS[n]
        tol = f"log ratio ±{k.tolerance:g}" if k.log else f"±{k.tolerance:g}"
        hits = sum(bool(d.within.get(n, False)) for d in ok if d.within is not None)
        lines.append(f"| `{n}` | {tol} | {hits}/{len(draws)} |")
    lines += ["", f"Wall time {wall_s:.0f} s, {sum(d.worlds for d in ok)} worlds."]
    return "\n".join(lines) + "\n"
