"""The feature registry (the retrospective's UFR): for each ad feature family, the artifacts it is
onboarded to.

* ``training_logs``: the rows serving logs for training and offline evaluation hold the family;
* ``l2_feature_store``: the L2 ranker reads the family live at scoring time;
* ``l1_embedding``: the item tower sees the family when an ad is embedded for the ANN index.

A family missing from an artifact is *filled with the serving default* there (0 in the raw
feature columns, the value a missing feature reads as). A model that learned to lean on a family
from the training logs therefore meets zeros wherever the family is not onboarded: that is the
parity gap, and it acts through the real inputs of the real models, nowhere else.

``l2_implies_l1`` (the retrospective's tooling fix) makes every family onboarded for the L2 store also
considered for the L1 embedding path. A :class:`FeatureRegistry` is mutable: scheduled changes
(``features.changes``) are applied at their simulated time by a process; their effect on the
index arrives only as ads are re-embedded and new tier builds deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES, FeatureChange, FeaturesConfig

Onboarding = dict[str, frozenset[str]]  # artifact -> families


def resolve(onboarding: dict[str, list[str]], l2_implies_l1: bool) -> Onboarding:
    """Families per artifact from a family -> artifacts table, with ``l2_implies_l1`` applied."""
    out = {a: frozenset(f for f, arts in onboarding.items() if a in arts) for a in ARTIFACTS}
    if l2_implies_l1:
        out["l1_embedding"] = out["l1_embedding"] | out["l2_feature_store"]
    return out


def bits(families: frozenset[str] | set[str]) -> int:
    """Bitmask of ``families`` (bit i = :data:`FEATURE_FAMILIES` [i])."""
    return sum(1 << i for i, f in enumerate(FEATURE_FAMILIES) if f in families)


def has_family(mask: np.ndarray, family: str) -> np.ndarray:
    """Elementwise: does the family bitmask ``mask`` include ``family``?"""
    return (np.asarray(mask) >> FEATURE_FAMILIES.index(family)) & 1 == 1


def families_in(masks: np.ndarray) -> tuple[str, ...]:
    """The families present in any of the rows with family bitmasks ``masks``."""
    present = int(np.bitwise_or.reduce(np.asarray(masks, dtype=np.int64))) if len(masks) else 0
    return tuple(f for i, f in enumerate(FEATURE_FAMILIES) if present >> i & 1)


def feature_view(rows_masks: np.ndarray, model_view: list[str] | None = None) -> tuple[str, ...]:
    """What a model trained on rows with bitmasks ``rows_masks`` learned from: the families the
    rows held, restricted to ``model_view`` (an L1's ``models.l1_features``) if given."""
    return tuple(f for f in families_in(rows_masks) if model_view is None or f in model_view)


def column_mask(families: frozenset[str] | set[str], slices: dict[str, slice]) -> np.ndarray:
    """(F,) float32: 1 on the columns of ``families``, 0 elsewhere."""
    width = max(s.stop for s in slices.values())
    m = np.zeros(width, np.float32)
    for f in families:
        m[slices[f]] = 1.0
    return m


def fill_default(features: np.ndarray, families: frozenset[str] | set[str],
                 slices: dict[str, slice]) -> np.ndarray:
    """A copy of ``features`` (n, F) with every family not in ``families`` set to the serving
    default 0."""
    if len(families) == len(slices):
        return features.copy()
    return features * column_mask(families, slices)


@dataclass
class FeatureRegistry:
    """The live onboarding table of one arm's serving stack."""

    onboarding: dict[str, set[str]]  # family -> artifacts (as configured, before the flag)
    l2_implies_l1: bool
    # artifact -> simulated time of the last change that altered its families (a record; staleness
    # of embedded ads is decided by the families they were embedded from, sim.serving.pipeline)
    changed_at: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def from_config(cfg: FeaturesConfig) -> FeatureRegistry:
        table = {f: set(cfg.onboarding.get(f, [])) for f in FEATURE_FAMILIES}
        return FeatureRegistry(table, cfg.l2_implies_l1)

    def resolved(self) -> Onboarding:
        return resolve({f: sorted(a) for f, a in self.onboarding.items()}, self.l2_implies_l1)

    def families(self, artifact: str) -> frozenset[str]:
        if artifact not in ARTIFACTS:
            raise ValueError(f"`artifact` must be one of {list(ARTIFACTS)}, got {artifact!r}")
        return self.resolved()[artifact]

    def apply(self, change: FeatureChange, now: float) -> list[str]:
        """Apply a scheduled change; return the artifacts whose families changed."""
        before = self.resolved()
        for family, arts in change.onboard.items():
            self.onboarding[family] |= set(arts)
        for family, arts in change.offboard.items():
            self.onboarding[family] -= set(arts)
        if change.l2_implies_l1 is not None:
            self.l2_implies_l1 = bool(change.l2_implies_l1)
        after = self.resolved()
        changed = [a for a in ARTIFACTS if before[a] != after[a]]
        for a in changed:
            self.changed_at[a] = now
        return changed
