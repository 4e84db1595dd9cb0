"""Per-request latency of the serving towers, the SLA per stage, and what a timeout means.

Each request's latency at a stage is drawn (keyed by ``(seed, request_id, stage)``) from a
lognormal whose median is set by the work the stage does for that request and by the load on the
serving fleet:

    median_ms = overhead_ms[stage]
                + ms_per_mflop[stage] * MFLOPs(stage) * (load[stage] / reference[stage]) ** load_exponent

**One fleet.** ``load[stage]`` is the work the fleet does per second at that stage, over *all*
arms: each arm's requests per second of simulated time times the MFLOPs each of them brings
(:func:`fleet_load`). ``reference[stage] = reference_rate x reference_mflops[stage]`` is the load
at which the compute term is as stated (by default the default world's: 512 requests per 300 s
of its ``simple`` tower, exact index and L2). So a request's latency depends on the fleet's load
and on the work of the models and index that serve it, never on its arm's traffic share (an A/A
test's arms see one latency distribution at any ramp share) nor on the simulator's tick length
(the same traffic is the same rate at any ``traffic.tick_s``); a heavier treatment loads the
servers its control shares.

The work is counted from the real models and index, not configured per family:

* ``query_tower``: the work of one forward of the arm's live query tower, as its family declares
  it (:meth:`sim.models.towers.TwoTowerBase.query_mflops`; so ``dhen``, with its token
  projections, attention and ensemble layers, costs more than ``simple``), times the cost of a
  multiply-add in the dtype it serves in relative to fp32 (``latency.dtype_cost``; by default
  the bytes of a weight, as on serving hardware with native low-precision units, where a small
  tower is bound by the memory it reads);
* ``item_lookup``: the vectors one search of each deployed tier compares (:func:`lookup_mflops`):
  every item for an exact (``Flat``) index; for an IVF index the coarse centroids plus the
  ``nprobe`` lists it scans; for an HNSW graph about ``efSearch`` visited nodes times their
  neighbours per layer; each comparison charged by the bytes of the code it reads (a scan is
  bound by memory: an ``SQ8`` code costs a quarter of an fp32 vector, an 8-byte ``PQ`` code
  less than an eighth), plus a product quantizer's distance tables;
* ``l2``: one forward of the L2 ranker (:meth:`sim.models.ranker.Ranker.pair_mflops`) for each of
  the request's ``k_l1`` candidates.

A stage slower than its SLA (``latency.sla_ms``) falls back (:mod:`sim.serving.funnel`): the query
tower to the user's last query vector from this arm (no ads if there is none), the item lookup to
the ``fresh`` tier alone, L2 to L1's estimates (the index pCTR prior and L1's pCVR).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np
from scipy.special import ndtri

from sim.ann import hnsw_graph, product_quantizer
from sim.config.schema import LatencyConfig
from sim.models.ranker import Ranker
from sim.rng import LATENCY, keyed_uniform
from sim.serving.index import DeployedIndex
from sim.serving.precision import ServedTower

STAGES = ("query_tower", "item_lookup", "l2")


@dataclass(frozen=True, kw_only=True)
class Latencies:
    """Per-request latency (ms) and success (within the SLA) of each stage; arrays of (B,)."""

    ms: dict[str, np.ndarray]
    ok: dict[str, np.ndarray]


def fleet_load(arms: Iterable[tuple[float, dict[str, float]]], seconds: float) -> dict[str, float]:
    """The fleet's work per second at each stage (fp32-equivalent MFLOP/s) while it serves, over
    ``seconds`` of simulated time, each ``(requests, per-request work of each stage)`` of
    ``arms``."""
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"`seconds` must be finite and > 0, got {seconds}")
    served = list(arms)
    for n, _ in served:
        if n < 0:
            raise ValueError(f"requests must be >= 0, got {n}")
    return {stage: sum(n * work[stage] for n, work in served) / seconds for stage in STAGES}


def draw_latencies(cfg: LatencyConfig, seed: int, request_id: np.ndarray,
                   work_mflops: dict[str, float], load: dict[str, float]) -> Latencies:
    """Latencies of a batch of requests for the given per-request work of each stage, while the
    fleet does ``load`` MFLOP/s at each stage (all arms, :func:`fleet_load`)."""
    b = request_id.shape[0]
    ms, ok = {}, {}
    for code, stage in enumerate(STAGES):
        if not np.isfinite(load[stage]) or load[stage] < 0:
            raise ValueError(f"`load[{stage!r}]` must be finite and >= 0, got {load[stage]}")
        if b and work_mflops[stage] > 0 and load[stage] == 0:
            raise ValueError(f"`load[{stage!r}]` is 0 while the batch brings "
                             f"{work_mflops[stage]} MFLOPs per request: the fleet serves it too")
        reference = cfg.reference_rate * cfg.reference_mflops[stage]
        scale = (load[stage] / reference) ** cfg.load_exponent
        median = cfg.overhead_ms[stage] + cfg.ms_per_mflop[stage] * work_mflops[stage] * scale
        u = keyed_uniform(seed, request_id, code, LATENCY)
        ms[stage] = median * np.exp(cfg.sigma * ndtri(np.clip(u, 1e-12, 1 - 1e-12)))
        ok[stage] = ms[stage] <= cfg.sla_ms[stage] if cfg.enabled else np.ones(b, bool)
    return Latencies(ms=ms, ok=ok)


def stage_work(query_model: ServedTower, l2: Ranker, tiers: Iterable[DeployedIndex],
               k_l1: int, dtype_cost: dict[str, float]) -> dict[str, float]:
    """Per-request work of each stage, in fp32-equivalent MFLOPs: the live query tower's declared
    work (:meth:`TwoTowerBase.query_mflops`) times ``dtype_cost`` of the dtype it serves in, L2's
    (:meth:`Ranker.pair_mflops` per candidate) and one search of each deployed tier."""
    lookup = sum(lookup_mflops(t.index) for t in tiers if t.n)
    return {"query_tower": query_model.query_mflops() * dtype_cost[query_model.dtype],
            "item_lookup": lookup, "l2": l2.pair_mflops() * k_l1}


def lookup_mflops(index: faiss.Index) -> float:
    """Work of one query's search of ``index`` in fp32-equivalent millions of FLOPs:
    ``comparisons x 2 d x code_bytes / (4 d)`` (an fp32 vector of ``d`` floats is ``2 d`` FLOPs
    read from ``4 d`` bytes; a scan is bound by the bytes it reads) plus, for a product
    quantizer, its distance tables (``2 d x 2**nbits`` per query). Comparisons:

    * exact (``Flat``): every stored vector, ``n``;
    * IVF: the ``nlist`` centroids plus the ``nprobe / nlist`` share of the vectors it scans,
      ``nlist + n x min(nprobe, nlist) / nlist`` (the centroids are fp32);
    * HNSW: ``efSearch`` candidates expanded at the base layer, each comparing its ``2M``
      neighbours, plus ``M`` per upper layer (about ``log_M n`` of them),
      ``efSearch x 2M + M x log_M n``."""
    n, d = int(index.ntotal), int(index.d)
    if n == 0:
        return 0.0
    code = code_bytes(index) / (4.0 * d)  # 1 for fp32 vectors
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        nlist, nprobe = int(ivf.nlist), int(ivf.nprobe)
        flops = 2.0 * (nlist + n * min(nprobe, nlist) / nlist * code) * d
    else:
        hnsw = hnsw_graph(index)
        if hnsw is not None:
            m = max(int(hnsw.nb_neighbors(1)), 2)  # type: ignore[attr-defined]  # not in faiss's stubs
            layers = max(np.log(n) / np.log(m), 1.0)
            comparisons = min(n, int(hnsw.efSearch) * 2 * m + m * layers)
        else:
            comparisons = n
        flops = 2.0 * comparisons * d * code
    pq = product_quantizer(index)
    if pq is not None:
        flops += 2.0 * d * int(pq.ksub)
    return flops / 1e6


def code_bytes(index: faiss.Index) -> int:
    """Bytes of one stored vector's code (``4 d`` for fp32 storage)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.code_size)
    hnsw = hnsw_graph(index)
    if hnsw is not None:
        return int(faiss.downcast_index(index.storage).sa_code_size())  # type: ignore[attr-defined]
    return int(index.sa_code_size())
