"""The model registry: every trained checkpoint, as a version of a lineage.

A *lineage* is a sequence of versions of one model: ``control/l1``, ``control/l2``, or a
readiness-check lineage ``readiness/dhen`` trained beside the live models for the skew sweep.
Version 1 is trained at start-up; each release adds the next version, warm-started from the
previous one. Every version keeps its family, training window, feature view and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.models.ranker import Ranker
from sim.models.towers import TwoTowerBase


@dataclass(kw_only=True)
class ModelVersion:
    """One trained checkpoint of a lineage (built with keywords: a reordered field must not
    silently swap two of the same type)."""

    lineage: str
    version: int
    kind: str  # "l1" or "l2"
    family: str  # "simple", "dhen" or "ranker"
    trained_at: float  # simulated seconds
    window_start: float
    window_end: float
    feature_view: tuple[str, ...]  # ad feature families the training logs held
    rows: int
    train_loss: float
    epochs: int  # epochs the fit ran (fewer than configured if training.early_stopping stopped it)
    parameters: int
    model: TwoTowerBase | Ranker  # kind "l1": an L1 two-tower; kind "l2": the L2 ranker
    offline: dict[str, Any] = field(default_factory=dict)  # L1: metrics on the next rows
    # the training rows' conversions known when it trained, and those still to come (truth:
    # the delayed-feedback bias of its labels; LoggedRows.positives)
    positives: int = 0
    late_positives: int = 0

    @property
    def tower(self) -> TwoTowerBase:
        """The L1 two-tower of an ``l1`` version."""
        if not isinstance(self.model, TwoTowerBase):
            raise TypeError(f"`{self.lineage}` v{self.version} is a {self.kind} model, not an L1 tower")
        return self.model

    @property
    def ranker(self) -> Ranker:
        """The L2 ranker of an ``l2`` version."""
        if not isinstance(self.model, Ranker):
            raise TypeError(f"`{self.lineage}` v{self.version} is a {self.kind} model, not the L2 ranker")
        return self.model


class Registry:
    def __init__(self) -> None:
        self._versions: dict[str, list[ModelVersion]] = {}

    def register(self, mv: ModelVersion) -> ModelVersion:
        versions = self._versions.setdefault(mv.lineage, [])
        expected = len(versions) + 1
        if mv.version != expected:
            raise ValueError(f"lineage `{mv.lineage}`: expected version {expected}, got {mv.version}")
        versions.append(mv)
        return mv

    def latest(self, lineage: str) -> ModelVersion:
        return self._versions[lineage][-1]

    def get(self, lineage: str, version: int) -> ModelVersion:
        versions = self._versions[lineage]
        if not 1 <= version <= len(versions):
            raise KeyError(f"lineage `{lineage}` has no version {version} (1..{len(versions)})")
        return versions[version - 1]

    def versions(self, lineage: str) -> list[ModelVersion]:
        return list(self._versions.get(lineage, []))

    def lineages(self) -> list[str]:
        return list(self._versions)

    def log_rows(self, mv: ModelVersion) -> dict[str, Any]:
        """The ``model_releases`` log row of a version."""
        return {"time": mv.trained_at, "lineage": mv.lineage, "kind": mv.kind,
                "family": mv.family, "version": mv.version, "window_start": mv.window_start,
                "window_end": mv.window_end, "rows": mv.rows, "train_loss": mv.train_loss,
                "epochs": mv.epochs,
                "parameters": mv.parameters, "feature_view": ",".join(mv.feature_view),
                "holdout_rows": mv.offline.get("holdout_rows", 0),
                "holdout_log_mae": mv.offline.get("log_mae", float("nan")),
                "holdout_log_loss": mv.offline.get("log_loss", float("nan")),
                "positives": mv.positives, "late_positives": mv.late_positives}
