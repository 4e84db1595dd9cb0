"""The ANN index of L1 item embeddings: built from a catalog snapshot, searched per batch.

An index is an immutable snapshot: the faiss index over the item vectors (inner-product metric),
and beside it, row for row, the catalog slot, ``ad_id``, model version and the per-ad L1 pCTR prior
the rows were built with. Serving swaps a whole new :class:`DeployedIndex` in at once. Rows whose
ad has expired since the build are dropped at serving (their slot holds another ``ad_id`` now).

The faiss index is the *serving* path: its storage may be quantised (``SQfp16``, ``SQ8``, ``PQ``)
and its search approximate (IVF, HNSW), and the item vectors may come from a reduced-precision
item tower (:mod:`sim.serving.precision`). Beside it each build keeps ``reference``, the rows'
vectors as the fp32 item tower makes them (the offline path), which the serving-path probe
searches exactly (:func:`search_exact`, :mod:`sim.serving.probe`). For an exact fp32 build they
are the very vectors the index holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from sim.ann import empty_index, hnsw_graph, min_train_points, quiet_clustering

TIERS = ("fresh", "large")  # search order: on a duplicate ad, the fresher tier's row wins
ROW_FIELDS = ("slot", "ad_id", "version", "ctr_prior", "families")  # per-row metadata of a tier


@dataclass(frozen=True, kw_only=True)
class DeployedIndex:
    index: faiss.Index
    slot: np.ndarray  # (n,) int64 catalog slot of each row
    ad_id: np.ndarray  # (n,) int64
    version: np.ndarray  # (n,) int32 model version that embedded the row
    ctr_prior: np.ndarray  # (n,) float32 L1's per-ad pCTR estimate
    families: np.ndarray  # (n,) uint8 bitmask of the families each row's vector was built from
    reference: np.ndarray  # (n, D+1) float32 the rows' vectors from the fp32 item tower
    built_at: float  # simulated seconds when the build started
    tier: str = "large"
    snapshot_time: float = 0.0  # the embedding-table snapshot the build read
    build_s: float = 0.0  # wall seconds the build took
    # an IVF index searches item vectors augmented to one norm, by L2 (``build_index``): the
    # squared norm they share; None for an index searched by inner product directly
    mips_norm2: float | None = None

    @property
    def n(self) -> int:
        return int(self.slot.shape[0])


def build_index(
    vectors: np.ndarray, slot: np.ndarray, ad_id: np.ndarray, version: np.ndarray,
    ctr_prior: np.ndarray, families: np.ndarray, factory: str, built_at: float,
    tier: str = "large", snapshot_time: float = 0.0, nprobe: int = 1,
    reference: np.ndarray | None = None, ef_search: int = 16,
) -> DeployedIndex:
    """Build a faiss index (``factory`` string, inner product) over ``vectors`` (n, D+1).

    ``reference`` (n, D+1): the same rows from the fp32 item tower, when the serving item tower
    is not fp32 (default: ``vectors``). An index that trains (IVF lists, product quantizers) is
    trained on the build's own vectors (k-means; faiss samples at most 256 per centroid and is
    let train on fewer than it asks for, :func:`sim.ann.quiet_clustering`); an IVF index searches
    ``nprobe`` lists per query, an HNSW graph keeps ``ef_search`` candidates while it searches
    (faiss does not raise it to ``k``: 16 returns ``k`` rows, fewer of them right). A build with
    fewer vectors than the index has centroids to train (:func:`sim.ann.min_train_points`) falls
    back to an exact ``Flat`` index: a small ``fresh`` tier cannot train one."""
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    reference = vectors if reference is None else np.ascontiguousarray(reference, np.float32)
    d = vectors.shape[1]
    empty = empty_index(factory, d)
    norm2: float | None = None
    index = empty.index
    if vectors.shape[0] < min_train_points(index):
        index = faiss.IndexFlatIP(d)
    elif empty.padded:
        # maximum inner product as nearest neighbour: with every item padded by
        # sqrt(M^2 - |v|^2) to the same norm M and the query by 0, |q - v|^2 = |q|^2 + M^2 - 2 q.v,
        # so the L2 lists and search order items by q.v (an inner-product IVF assigns by the
        # largest inner product with a centroid, which for vectors of unequal norms says little)
        sq = (vectors.astype(np.float64) ** 2).sum(axis=1)
        norm2 = float(sq.max()) if sq.size else 0.0
        pad = np.sqrt(np.maximum(norm2 - sq, 0.0)).astype(np.float32)[:, None]
        vectors = np.ascontiguousarray(np.hstack([vectors, pad]))
        faiss.extract_index_ivf(index).nprobe = nprobe
    graph = hnsw_graph(index)
    if graph is not None:
        graph.efSearch = ef_search
    quiet_clustering(index)
    if not index.is_trained and vectors.shape[0] > 0:
        index.train(vectors)
    if vectors.shape[0] > 0:
        index.add(vectors)
    return DeployedIndex(index=index, slot=slot.astype(np.int64), ad_id=ad_id.astype(np.int64),
                         version=version.astype(np.int32), ctr_prior=ctr_prior.astype(np.float32),
                         families=families.astype(np.uint8), reference=reference,
                         built_at=built_at, tier=tier, snapshot_time=snapshot_time,
                         build_s=time.perf_counter() - started, mips_norm2=norm2)


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
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if idx.mips_norm2 is None:
        scores, rows = idx.index.search(q, k)
        return scores, rows
    dist, rows = idx.index.search(np.hstack([q, np.zeros((q.shape[0], 1), np.float32)]), k)
    q2 = (q.astype(np.float64) ** 2).sum(axis=1, keepdims=True)
    scores = ((q2 + idx.mips_norm2 - dist) / 2.0).astype(np.float32)  # back to q.v
    return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows


def search_exact(idx: DeployedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact fp32 top-``k`` of ``queries`` over the build's ``reference`` vectors, by inner
    product (faiss's brute-force ``knn``, the computation an exact ``Flat`` index does): the
    offline path's retrieval, shaped like :func:`search`."""
    b = queries.shape[0]
    scores = np.full((b, k), -np.inf, np.float32)
    rows = np.full((b, k), -1, np.int64)
    kk = min(k, idx.n)
    if kk:
        s, r = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), idx.reference, kk,
                         metric=faiss.METRIC_INNER_PRODUCT)
        scores[:, :kk], rows[:, :kk] = np.where(r >= 0, s, -np.inf), r
    return scores, rows
