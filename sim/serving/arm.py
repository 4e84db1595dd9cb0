"""An arm: the serving stack one slice of traffic sees, and the campaigns it spends.

The live query tower (``query_model`` at ``query_version``) and the deployed index tiers may come
from different model versions: the query side rolls forward on release (after a rollout delay),
the item side only as enrichment re-embeds ads and new tier builds deploy. ``query_model`` is the
fp32 checkpoint; requests are served by :meth:`Arm.served_query`, the checkpoint in the arm's
``serving.query_dtype`` (:mod:`sim.serving.precision`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.schema import Config
from sim.features.coverage import CoverageCounts
from sim.features.registry import FeatureRegistry
from sim.models.ranker import Ranker
from sim.models.towers import TwoTowerBase
from sim.pacing import Budgets
from sim.serving.index import DeployedIndex, row_table
from sim.serving.precision import ServedTower, serve_as


@dataclass(kw_only=True)
class QueryCache:
    """Each user's last query vector served by an arm: the query tower's timeout fallback."""

    vectors: np.ndarray  # (n_users, D+1) float32
    valid: np.ndarray  # (n_users,) bool

    @staticmethod
    def empty(n_users: int, width: int) -> QueryCache:
        return QueryCache(vectors=np.zeros((n_users, width), np.float32), valid=np.zeros(n_users, bool))

    def store(self, users: np.ndarray, vectors: np.ndarray) -> None:
        self.vectors[users] = vectors
        self.valid[users] = True


@dataclass(kw_only=True)
class ReleasedArm:
    """What a release reads and sets of an arm (:mod:`sim.lifecycle`): its models. The readiness
    check replays releases with these alone, without a serving stack."""

    name: str
    code: int  # index of the arm in experiment.arms
    cfg: Config  # the arm's config (the treatment overlay applied for ``treatment``)
    family: str  # L1 family
    l1_lineage: str
    l2_lineage: str
    query_model: TwoTowerBase
    query_version: int
    l2: Ranker


@dataclass(kw_only=True)
class Arm(ReleasedArm):
    """One arm's serving stack and campaigns (built with keywords)."""

    budgets: Budgets  # this arm's campaigns (shared with the other arm under user_split)
    query_cache: QueryCache
    features: FeatureRegistry  # this arm's feature registry (changes apply per arm)
    tiers: dict[str, DeployedIndex] = field(default_factory=dict)
    # tier -> (rows,) bool: rows whose ad a fresher deployed tier holds (skipped at retrieval)
    superseded: dict[str, np.ndarray] = field(default_factory=dict)
    # the tiers' row metadata end to end and each tier code's first row (``index.row_table``)
    rows: dict[str, np.ndarray] = field(default_factory=lambda: row_table({})[0])
    row_offset: np.ndarray = field(default_factory=lambda: row_table({})[1])
    # (hour, tier code, distance) -> served candidates, flushed to the version_distance log
    version_counts: dict[tuple[int, int, int], int] = field(default_factory=dict)
    # feature coverage of what this arm served (the dashboard and the parity audit's totals)
    coverage: CoverageCounts = field(default_factory=CoverageCounts)
    served: ServedTower | None = field(default=None, repr=False)  # cache of served_query()

    def served_query(self) -> ServedTower:
        """The live query checkpoint as serving runs it (converted once per rollout)."""
        if self.served is None or self.served.checkpoint is not self.query_model:
            self.served = serve_as(self.query_model, self.cfg.serving.query_dtype)
        return self.served

    def deploy(self, idx: DeployedIndex) -> None:
        """Swap in a tier build and recompute which ``large`` rows the ``fresh`` tier supersedes."""
        self.tiers[idx.tier] = idx
        if "fresh" in self.tiers and "large" in self.tiers:
            self.superseded["large"] = np.isin(self.tiers["large"].ad_id,
                                               self.tiers["fresh"].ad_id)
        self.rows, self.row_offset = row_table(self.tiers)
