"""How a world's statistics are compared with their targets: each statistic's tolerance, its
error in tolerances, the loss of a trial, the targets no world can have, and the statistics of a
trial averaged over its fit seeds. Shared by the search (:mod:`sim.emergent_fit`), its checks
(:mod:`sim.fit_check`) and the command (:mod:`sim.calibrate`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

RELATIVE_TOL = 0.10  # a rate's tolerance where the target gives no sd: 10% of the target
EXHAUSTED_TOL = 0.05  # budget_exhausted's (a share; absolute) where the target gives no sd
MISSING_Z = 10.0  # a statistic a world cannot define (no clicks, no conversions) counts as this

# statistics compared by their log ratio (positive rates and ratios); every other statistic
# (shares that can be 0, correlations, budget exhaustion) by its difference
RATIOS = ("ctr", "cvr", "conversions_per_impr", "position_ctr_1", "position_ctr_2", "peak_to_trough")


def relative(name: str) -> bool:
    """Whether ``name`` is compared by its log ratio (:data:`RATIOS`) or its difference."""
    return name in RATIOS


def tolerance(name: str, value: float, sd: float | None) -> float:
    """A statistic's tolerance: for a ratio (:data:`RATIOS`), relative: ``sd / value`` where the
    target gives an sd, else :data:`RELATIVE_TOL`; for every other statistic, absolute: the sd,
    else :data:`EXHAUSTED_TOL` for ``budget_exhausted`` and ``budget_target_corr``, else
    :data:`RELATIVE_TOL` of the value (0.01 for a value of 0)."""
    if relative(name):
        return sd / value if sd is not None else RELATIVE_TOL
    if sd is not None:
        return sd
    if name in ("budget_exhausted", "budget_target_corr"):
        return EXHAUSTED_TOL
    return RELATIVE_TOL * abs(value) if value else 0.01


def z_score(name: str, got: float | None, target: float, tol: float) -> float:
    """The error of ``got`` against ``target`` in tolerances: the log ratio for a ratio (the
    relative error near the target), the difference for every other statistic; a value the
    world could not define (or a ratio of 0) counts as :data:`MISSING_Z`."""
    if got is None or not math.isfinite(got) or (relative(name) and got <= 0):
        return MISSING_Z
    if relative(name):
        return math.log(got / target) / tol
    return (got - target) / tol


def check_targets(targets: Mapping[str, float]) -> None:
    """Refuse targets no world can have: a rate outside (0, 1), a ratio <= 0, a share outside
    [0, 1], a correlation outside [-1, 1] (named with its value)."""
    for n, v in targets.items():
        bad = ((n in ("ctr", "cvr", "conversions_per_impr") and not 0 < v < 1)
               or (n in RATIOS and v <= 0)
               or ((n == "budget_exhausted" or n.startswith(("delay_within_", "hour_share_"))
                    or n == "quietest_six_hours") and not 0 <= v <= 1)
               or (n == "budget_target_corr" and not -1 <= v <= 1))
        if bad:
            raise ValueError(f"statistic `{n}`: {v} is out of its range")
    if "conversions_per_impr" in targets:
        for a, b in (("ctr", "cvr"), ("cvr", "ctr")):
            if a in targets and targets["conversions_per_impr"] / targets[a] >= 1:
                raise ValueError(f"`conversions_per_impr` / `{a}` must be < 1 (it is `{b}`)")


def _values(per_seed: Sequence[Mapping[str, float | None] | None], name: str) -> list[float]:
    """``name``'s value in each world that defines it."""
    out: list[float] = []
    for s in per_seed:
        v = None if s is None else s.get(name)
        if v is not None:
            out.append(float(v))
    return out


def mean_statistics(per_seed: Sequence[dict[str, float | None] | None]) -> dict[str, float | None]:
    """Each statistic's mean over the seeds (None where a seed's world cannot define it; empty
    if a world failed)."""
    if any(s is None for s in per_seed) or not per_seed:
        return {}
    names = per_seed[0]
    out: dict[str, float | None] = {}
    for n in names:  # type: ignore[union-attr]
        vals = _values(per_seed, n)
        out[n] = float(np.mean(vals)) if len(vals) == len(per_seed) else None
    return out


def loss(stats: Mapping[str, float | None], targets: Mapping[str, float],
         tols: Mapping[str, float]) -> float:
    """The mean squared :func:`z_score` of the targets (``stats`` empty: a failed trial)."""
    if not stats:
        return math.inf
    return float(np.mean([z_score(n, stats.get(n), t, tols[n]) ** 2 for n, t in targets.items()]))
