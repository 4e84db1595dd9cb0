"""Per-request latency of the serving towers, the SLA per stage, and what a timeout means.

Each request's latency at a stage is drawn (keyed by ``(seed, request_id, stage)``) from a
lognormal whose median is set by the work the stage does for that request and by the batch:

    median_ms = overhead_ms[stage]
                + ms_per_mflop[stage] * MFLOPs(stage) * (batch / batch_ref) ** batch_exponent

The work is counted from the real models and index, not configured per family:

* ``query_tower``: the multiply-adds of one forward of the arm's live query tower (so ``dhen``,
  with its token projections, attention and ensemble layers, costs more than ``simple``);
* ``item_lookup``: one exact inner-product search over every item the deployed tiers hold;
* ``l2``: one forward of the L2 ranker for each of the request's ``k_l1`` candidates.

A stage slower than its SLA (``latency.sla_ms``) falls back (:mod:`sim.serving.funnel`): the query
tower to the user's last query vector from this arm (no ads if there is none), the item lookup to
the ``fresh`` tier alone, L2 to L1's estimates (the index pCTR prior and L1's pCVR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from torch import nn

from sim.config.schema import LatencyConfig
from sim.rng import keyed_uniform

STAGES = ("query_tower", "item_lookup", "l2")
LATENCY = 8  # keyed-draw event code (plus the stage index)


def mflops(module: nn.Module) -> float:
    """Multiply-adds of one forward for one input row, in millions (Linear layers, and the
    token-by-token attention of DHEN: every Linear applied once per token)."""
    total = 0.0
    tokens = getattr(module, "slices", None)
    n_tokens = len(tokens) if tokens is not None else 1
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            per_token = name.startswith("layers") or ".layers" in name
            total += sub.in_features * sub.out_features * (n_tokens if per_token else 1)
        if hasattr(sub, "qkv"):  # attention scores and mixing: tokens^2 x width, twice
            total += 2 * n_tokens * n_tokens * sub.qkv.in_features
    return 2.0 * total / 1e6


@dataclass(frozen=True)
class Latencies:
    """Per-request latency (ms) and success (within the SLA) of each stage; arrays of (B,)."""

    ms: dict[str, np.ndarray]
    ok: dict[str, np.ndarray]


def draw_latencies(cfg: LatencyConfig, seed: int, request_id: np.ndarray,
                   work_mflops: dict[str, float]) -> Latencies:
    """Latencies of a batch of requests for the given per-request work of each stage."""
    b = request_id.shape[0]
    scale = (b / cfg.batch_ref) ** cfg.batch_exponent
    ms, ok = {}, {}
    for code, stage in enumerate(STAGES):
        median = cfg.overhead_ms[stage] + cfg.ms_per_mflop[stage] * work_mflops[stage] * scale
        u = keyed_uniform(seed, request_id, code, LATENCY)
        ms[stage] = median * np.exp(cfg.sigma * ndtri(np.clip(u, 1e-12, 1 - 1e-12)))
        ok[stage] = ms[stage] <= cfg.sla_ms[stage] if cfg.enabled else np.ones(b, bool)
    return Latencies(ms, ok)


def stage_work(arm: object, k_l1: int) -> dict[str, float]:
    """Per-request MFLOPs of each stage for ``arm``'s live models and deployed tiers (cached per
    model object: a version's cost does not change)."""
    q = arm.query_model  # type: ignore[attr-defined]
    l2 = arm.l2  # type: ignore[attr-defined]
    tiers = arm.tiers  # type: ignore[attr-defined]
    items = sum(t.n for t in tiers.values())
    dim = next(iter(tiers.values())).index.d if tiers else 0
    return {"query_tower": _cached(q.query_tower), "item_lookup": 2.0 * items * dim / 1e6,
            "l2": _cached(l2.net) * k_l1}


_CACHE: dict[int, tuple[nn.Module, float]] = {}


def _cached(module: nn.Module) -> float:
    hit = _CACHE.get(id(module))
    if hit is None or hit[0] is not module:
        hit = (module, mflops(module))
        _CACHE[id(module)] = hit
    return hit[1]
