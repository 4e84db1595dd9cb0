"""The item-embedding pipeline and the index deployer of one arm.

* **Enrichment** (every ``index.enrich_interval_s``): ads that are new, or whose features changed
  since they were last embedded, are embedded with the item tower live *at that moment* into the
  embedding table, which keeps each ad's vector, the version that produced it, and when.
* **Snapshots** (every ``index.snapshot_interval_s``): a copy of the embedding table.
* **Tiers**: ``large`` holds every live ad of the latest snapshot; ``fresh`` holds the ads of the
  latest snapshot embedded after the snapshot of the deployed ``large`` build (the delta). A
  build of a tier starts every ``index.<tier>_build_interval_s``, builds a real faiss index, and is
  swapped in at once ``index.<tier>_deploy_s`` later. In ``streaming`` mode a build takes the
  snapshot's stored vectors (mixed versions); in ``batch`` mode a batch job re-embeds the tier's
  ads with the item tower live at build start (one version per build); ``hybrid`` is batch for
  ``large`` and streaming for ``fresh``.

Item vectors come from the item tower in the arm's ``serving.item_dtype``
(:mod:`sim.serving.precision`); when that is not fp32 the table and each build also keep the
fp32 checkpoint's vectors of the same ads, the offline path the serving-path probe compares with.

Every embedding follows the arm's feature registry (:mod:`sim.features.registry`): families not
onboarded to ``l1_embedding`` are filled with the serving default before the item tower sees
them, and the table and each index row record which families the vector was built with. When a
change alters the ``l1_embedding`` families, every ad embedded from the old families is stale:
enrichment re-embeds it, and the fix reaches retrieval as the next tier builds deploy.

Retrieval searches every deployed tier and merges (:func:`sim.serving.funnel.retrieve`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import simpy
import torch

from sim.clock import Wait
from sim.config.schema import Config
from sim.features.registry import bits, fill_default
from sim.logs.writer import LogWriter
from sim.models.towers import TwoTowerBase
from sim.serving.arm import Arm
from sim.serving.ctr_prior import ReferenceContexts, ctr_prior
from sim.serving.index import DeployedIndex, build_index
from sim.serving.precision import ServedTower, serve_as
from sim.world.catalog import family_slices
from sim.world.marketplace import Marketplace

ItemTower = Callable[[], tuple[TwoTowerBase, int]]


@dataclass(kw_only=True)
class EmbeddingTable:
    """One row per catalog slot: the vector of the ad last embedded there."""

    vectors: np.ndarray  # (S, D+1) float32
    version: np.ndarray  # (S,) int32, 0 = never embedded
    ad_id: np.ndarray  # (S,) int64, -1 = never embedded
    embedded_at: np.ndarray  # (S,) float64 seconds
    families: np.ndarray  # (S,) uint8 bitmask of the families the vector was embedded from
    # (S, D+1) float32 the fp32 checkpoint's vectors; None when serving embeds in fp32 (= vectors)
    reference: np.ndarray | None = None

    @staticmethod
    def empty(n: int, width: int, reference: bool = False) -> EmbeddingTable:
        return EmbeddingTable(vectors=np.zeros((n, width), np.float32), version=np.zeros(n, np.int32),
                              ad_id=np.full(n, -1, np.int64), embedded_at=np.full(n, -np.inf),
                              families=np.zeros(n, np.uint8),
                              reference=np.zeros((n, width), np.float32) if reference else None)

    def copy(self) -> EmbeddingTable:
        return EmbeddingTable(vectors=self.vectors.copy(), version=self.version.copy(),
                              ad_id=self.ad_id.copy(), embedded_at=self.embedded_at.copy(),
                              families=self.families.copy(),
                              reference=None if self.reference is None else self.reference.copy())


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    time: float
    table: EmbeddingTable


def _version_range(v: np.ndarray) -> dict[str, int]:
    """min, max and number of distinct versions (0, 0, 0 when empty)."""
    if v.size == 0:
        return {"min_version": 0, "max_version": 0, "n_versions": 0}
    return {"min_version": int(v.min()), "max_version": int(v.max()),
            "n_versions": int(np.unique(v).size)}


def embed(model: TwoTowerBase | ServedTower, features: np.ndarray) -> np.ndarray:
    """Item vectors (n, D+1) of ads with ``features`` (n, F)."""
    with torch.inference_mode():
        return model.item_vectors(torch.from_numpy(features)).numpy()


def stale_slots(table: EmbeddingTable, ad_id: np.ndarray, changed_at: np.ndarray,
                families: int | None = None) -> np.ndarray:
    """Slots holding an ad not yet embedded, changed since it was embedded, or (given the
    ``l1_embedding`` families bitmask ``families``) embedded from other families than that."""
    stale = (table.ad_id != ad_id) | (changed_at > table.embedded_at)
    if families is not None:
        stale |= table.families != families
    return np.flatnonzero(stale)


def tier_members(tier: str, snap: Snapshot, ad_id: np.ndarray, expires_at: np.ndarray,
                 now: float, base_time: float) -> np.ndarray:
    """Slots a build of ``tier`` holds: live ads of the snapshot (``fresh``: those embedded after
    ``base_time``, the snapshot time of the deployed ``large`` build)."""
    t = snap.table
    live = (t.ad_id == ad_id) & (expires_at > now) & (t.version > 0)
    if tier == "fresh":
        live &= t.embedded_at > base_time
    return np.flatnonzero(live)


class IndexPipeline:
    """Enrichment, snapshots and the tier builds of one arm, as SimPy processes."""

    def __init__(self, arm: Arm, market: Marketplace, cfg: Config, item_tower: ItemTower,
                 contexts: ReferenceContexts, writer: LogWriter) -> None:
        self.arm, self.market, self.cfg = arm, market, cfg
        self.item_tower, self.contexts, self.writer = item_tower, contexts, writer
        width = cfg.models.embedding_dim + 1
        self.dtype = cfg.serving.item_dtype
        self.table = EmbeddingTable.empty(market.catalog.n, width, reference=self.dtype != "fp32")
        self.snapshot: Snapshot | None = None
        self.slices = family_slices(cfg.world.latent_dim)
        self.served: ServedTower | None = None  # the live item checkpoint as serving runs it

    # -- pure-ish steps (called by the processes and by tests) ----------------------------

    def embed_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        """Vectors of the ads in ``slots`` as the L1 embedding path sees them now (the live item
        tower in ``serving.item_dtype``), the fp32 checkpoint's (None when that is the dtype),
        the item tower's version and the families bitmask."""
        families = self.arm.features.families("l1_embedding")
        model, version = self.item_tower()
        if self.served is None or self.served.checkpoint is not model:
            self.served = serve_as(model, self.dtype)
        x = fill_default(self.market.catalog.features[slots], families, self.slices)
        reference = None if self.dtype == "fp32" else embed(model, x)
        return embed(self.served, x), reference, version, bits(families)

    def enrich(self, now: float) -> np.ndarray:
        cat = self.market.catalog
        slots = stale_slots(self.table, cat.ad_id, cat.changed_at,
                            bits(self.arm.features.families("l1_embedding")))
        if slots.size:
            vectors, reference, version, fam = self.embed_slots(slots)
            self.table.vectors[slots] = vectors
            if self.table.reference is not None:
                self.table.reference[slots] = reference
            self.table.version[slots] = version
            self.table.families[slots] = fam
            self.table.ad_id[slots] = cat.ad_id[slots]
            self.table.embedded_at[slots] = now
        return slots

    def take_snapshot(self, now: float) -> Snapshot:
        self.snapshot = Snapshot(time=now, table=self.table.copy())
        v = self.snapshot.table.version
        v = v[v > 0]
        self.writer.append("snapshots", {"time": now, "arm": self.arm.name, "n_items": v.size,
                                         **_version_range(v)})
        return self.snapshot

    def build(self, tier: str, now: float) -> DeployedIndex:
        """Build ``tier`` from the latest snapshot (not yet deployed)."""
        assert self.snapshot is not None, "a snapshot must exist before a build"
        cat, snap, mode = self.market.catalog, self.snapshot, self.cfg.index.build_mode
        large = self.arm.tiers.get("large")
        base = snap.time if tier == "large" else (large.snapshot_time if large else -np.inf)
        slots = tier_members(tier, snap, cat.ad_id, cat.expires_at, now, base)
        if mode == "batch" or (mode == "hybrid" and tier == "large"):
            vectors, reference, version, fam = self.embed_slots(slots)
            versions = np.full(slots.size, version, np.int32)
            families = np.full(slots.size, fam, np.uint8)
        else:
            vectors, versions = snap.table.vectors[slots], snap.table.version[slots]
            families = snap.table.families[slots]
            reference = None if snap.table.reference is None else snap.table.reference[slots]
        l2_view = fill_default(cat.features[slots], self.arm.features.families("l2_feature_store"),
                               self.slices)
        prior = ctr_prior(self.arm.l2, self.contexts, l2_view)
        return build_index(vectors, slots, cat.ad_id[slots], versions, prior, families,
                           self.cfg.index.factory, now, tier=tier, snapshot_time=snap.time,
                           nprobe=self.cfg.index.nprobe, reference=reference,
                           ef_search=self.cfg.index.ef_search)

    def deploy(self, idx: DeployedIndex, now: float) -> None:
        self.arm.deploy(idx)
        v = idx.version
        self.writer.append("index_builds", {
            "time": idx.built_at, "deploy_time": now, "arm": self.arm.name, "tier": idx.tier,
            "mode": self.cfg.index.build_mode, "snapshot_time": idx.snapshot_time,
            "n_items": idx.n, **_version_range(v), "build_s": idx.build_s})

    def initial_deploy(self, now: float) -> None:
        """At time 0: embed everything, snapshot, and deploy both tiers at once."""
        self.enrich(now)
        self.take_snapshot(now)
        for tier in ("large", "fresh"):  # large first: fresh is the delta from its snapshot
            self.deploy(self.build(tier, now), now)

    # -- processes -------------------------------------------------------------------------

    def enrichment(self, env: simpy.Environment, wait: Wait
                   ) -> Generator[simpy.Event, None, None]:
        while True:
            yield wait("enrichment", self.cfg.index.enrich_interval_s)
            self.enrich(env.now)

    def snapshots(self, env: simpy.Environment, wait: Wait
                  ) -> Generator[simpy.Event, None, None]:
        while True:
            yield wait("snapshot", self.cfg.index.snapshot_interval_s)
            self.take_snapshot(env.now)

    def tier_builds(self, env: simpy.Environment, wait: Wait,
                    tier: str) -> Generator[simpy.Event, None, None]:
        interval = getattr(self.cfg.index, f"{tier}_build_interval_s")
        delay = getattr(self.cfg.index, f"{tier}_deploy_s")
        while True:
            yield wait(f"{tier}_build", interval)
            idx = self.build(tier, env.now)
            env.process(self._deploy_later(env, wait, idx, delay))

    def _deploy_later(self, env: simpy.Environment, wait: Wait,
                      idx: DeployedIndex, delay: float) -> Generator[simpy.Event, None, None]:
        yield wait("deploy", delay)
        self.deploy(idx, env.now)
