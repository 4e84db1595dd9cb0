"""The coverage dashboard: per feature family and artifact, the share of served rows in which the
family was present, counted in the data plane per hour and written to the ``feature_coverage`` log:

* ``l1_embedding``: live retrieved candidates whose index vector was embedded with the family;
* ``l2_feature_store``: candidates L2 scored while the family was onboarded to the store;
* ``training_logs``: rows logged for training with the family (the offline insertion table).

The run's totals feed the parity audit (:mod:`sim.parity_audit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES
from sim.features.registry import has_family
from sim.logs.writer import LogWriter

PRESENT = 0.99  # a family is "present" in an artifact at this coverage or more


@dataclass
class CoverageCounts:
    """``[rows served, rows with the family present]`` per (hour, artifact, family) until flushed
    to the ``feature_coverage`` log (``hourly``), and per (artifact, family) for the run
    (``total``, for the parity audit)."""

    hourly: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)
    total: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, hour: int, artifact: str, family: str, rows: int, present: int) -> None:
        for acc in (self.hourly.setdefault((hour, artifact, family), [0, 0]),
                    self.total.setdefault((artifact, family), [0, 0])):
            acc[0] += rows
            acc[1] += present


def count_coverage(counts: CoverageCounts, hour: int, live_families: np.ndarray, scored: int,
                   l2_families: frozenset[str], logged_families: np.ndarray) -> None:
    """Accumulate one served batch's coverage (a loop over the five families, not over rows):
    ``live_families`` (N,) the family bits of the live retrieved candidates' item vectors,
    ``scored`` the candidates L2 scored (not timed out), ``l2_families`` the families onboarded to
    the L2 store, ``logged_families`` (M,) the family bits of the rows logged for training."""
    for family in FEATURE_FAMILIES:
        counts.add(hour, "l1_embedding", family, live_families.size,
                   int(has_family(live_families, family).sum()))
        counts.add(hour, "l2_feature_store", family, scored, scored if family in l2_families else 0)
        counts.add(hour, "training_logs", family, logged_families.size,
                   int(has_family(logged_families, family).sum()))


def flush_coverage(counts: CoverageCounts, arm: str, writer: LogWriter) -> None:
    """Write the hourly counts to the ``feature_coverage`` log and clear them."""
    if not counts.hourly:
        return
    keys = sorted(counts.hourly)
    writer.append("feature_coverage", {
        "hour": [k[0] for k in keys], "arm": arm, "artifact": [k[1] for k in keys],
        "family": [k[2] for k in keys], "rows": [counts.hourly[k][0] for k in keys],
        "present": [counts.hourly[k][1] for k in keys]})
    counts.hourly.clear()


def coverage_shares(totals: dict[tuple[str, str], list[int]]) -> dict[str, dict[str, float | None]]:
    """``{family: {artifact: share}}`` from run totals (None where no rows were served)."""
    return {f: {a: (totals[(a, f)][1] / totals[(a, f)][0]
                    if (a, f) in totals and totals[(a, f)][0] else None) for a in ARTIFACTS}
            for f in FEATURE_FAMILIES}
