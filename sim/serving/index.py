"""The ANN index of L1 item embeddings: built from a catalog snapshot, searched per batch.

An index is an immutable snapshot: the faiss index over the item vectors (inner-product metric),
and beside it, row for row, the catalog slot, ``ad_id``, model version and the per-ad L1 pCTR prior
the rows were built with. Serving swaps a whole new :class:`DeployedIndex` in at once. Rows whose
ad has expired since the build are dropped at serving (their slot holds another ``ad_id`` now).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

TIERS = ("fresh", "large")  # search order: on a duplicate ad, the fresher tier's row wins
ROW_FIELDS = ("slot", "ad_id", "version", "ctr_prior", "families")  # per-row metadata of a tier


@dataclass(frozen=True)
class DeployedIndex:
    index: faiss.Index
    slot: np.ndarray  # (n,) int64 catalog slot of each row
    ad_id: np.ndarray  # (n,) int64
    version: np.ndarray  # (n,) int32 model version that embedded the row
    ctr_prior: np.ndarray  # (n,) float32 L1's per-ad pCTR estimate
    families: np.ndarray  # (n,) uint8 bitmask of the families each row's vector was built from
    built_at: float  # simulated seconds when the build started
    tier: str = "large"
    snapshot_time: float = 0.0  # the embedding-table snapshot the build read
    build_s: float = 0.0  # wall seconds the build took

    @property
    def n(self) -> int:
        return int(self.slot.shape[0])


def build_index(
    vectors: np.ndarray, slot: np.ndarray, ad_id: np.ndarray, version: np.ndarray,
    ctr_prior: np.ndarray, families: np.ndarray, factory: str, built_at: float,
    tier: str = "large", snapshot_time: float = 0.0, nprobe: int = 1,
) -> DeployedIndex:
    """Build a faiss index (``factory`` string, inner product) over ``vectors`` (n, D+1).

    An IVF index is trained on the build's own vectors (k-means; faiss samples at most 256 per
    list) and searches ``nprobe`` lists per query. A build with fewer vectors than the IVF has
    lists falls back to an exact ``Flat`` index (a small ``fresh`` tier cannot train one)."""
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and vectors.shape[0] < ivf.nlist:
        index, ivf = faiss.IndexFlatIP(vectors.shape[1]), None
    if ivf is not None:
        ivf.nprobe = nprobe
    if not index.is_trained and vectors.shape[0] > 0:
        index.train(vectors)
    if vectors.shape[0] > 0:
        index.add(vectors)
    return DeployedIndex(index, slot.astype(np.int64), ad_id.astype(np.int64),
                         version.astype(np.int32), ctr_prior.astype(np.float32),
                         families.astype(np.uint8), built_at, tier, snapshot_time,
                         time.perf_counter() - started)


def row_table(tiers: dict[str, DeployedIndex]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The deployed tiers' row metadata laid end to end in ``TIERS`` order, plus one sentinel row
    (slot 0, ad_id -1, version 0, prior 0, families 0) at the end, and each tier code's first
    row: a retrieved (tier code, row) is row ``offset[code] + row`` of the table."""
    present = [tiers[t] for t in TIERS if t in tiers]
    sizes = [tiers[t].n if t in tiers else 0 for t in TIERS]
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    sentinel = {"slot": np.zeros(1, np.int64), "ad_id": np.full(1, -1, np.int64),
                "version": np.zeros(1, np.int32), "ctr_prior": np.zeros(1, np.float32),
                "families": np.zeros(1, np.uint8)}
    table = {f: np.concatenate([*(getattr(ix, f) for ix in present), sentinel[f]])
             for f in ROW_FIELDS}
    return table, offset


def search(idx: DeployedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows per query: (scores (B, k) float32 inner products, rows (B, k) int64, -1 = none)."""
    if idx.n == 0:
        b = queries.shape[0]
        return np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64)
    scores, rows = idx.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, rows
