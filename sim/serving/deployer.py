"""The index deployer: snapshot the live catalog, embed it with the live item tower, build, swap.

Each build embeds every live ad with the arm's current L1 item tower, computes the per-ad L1 pCTR
prior (the L2 ranker's pCTR averaged over a fixed set of reference contexts, the engagement
estimate L1 ranks with beside its own pCVR), builds a faiss index and returns it; the caller
swaps it into the arm at once. Ads that arrive between builds are not retrievable until the next
build (a freshness lag that the fast/large tier split of the lifecycle issue refines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from sim.config.schema import Config
from sim.models.ranker import Ranker
from sim.models.towers import TwoTower
from sim.serving.features import surface_onehot
from sim.serving.index import DeployedIndex, build_index
from sim.world.marketplace import Marketplace
from sim.world.traffic import draw_audience

PRIOR_CHUNK_ROWS = 1 << 18  # rows per L2 forward when computing the pCTR prior


@dataclass(frozen=True)
class ReferenceContexts:
    """A fixed sample of (user, surface) contexts, drawn once per world."""

    user_x: np.ndarray  # (C, Fu) float32
    surface_x: np.ndarray  # (C, n_surfaces) float32


def reference_contexts(market: Marketplace, cfg: Config,
                       rng: np.random.Generator) -> ReferenceContexts:
    user, surface = draw_audience(rng, cfg.funnel.ctr_prior_contexts, market.users,
                                  market.surface_mix)
    return ReferenceContexts(market.users.features[user],
                             surface_onehot(surface, len(cfg.world.surfaces)))


def ctr_prior(l2: Ranker, ctx: ReferenceContexts, ad_x: np.ndarray) -> np.ndarray:
    """(S,) mean L2 pCTR of each ad over the reference contexts."""
    c, s = ctx.user_x.shape[0], ad_x.shape[0]
    out = np.empty(s, dtype=np.float32)
    step = max(1, PRIOR_CHUNK_ROWS // c)
    u, sx = torch.from_numpy(ctx.user_x), torch.from_numpy(ctx.surface_x)
    with torch.inference_mode():
        for start in range(0, s, step):  # chunks of ads bound memory; not a per-ad loop
            a = torch.from_numpy(ad_x[start:start + step])
            k = a.shape[0]
            x = l2.inputs(u.repeat(k, 1), sx.repeat(k, 1), a.repeat_interleave(c, dim=0))
            p = torch.sigmoid(l2(x)[:, 0]).reshape(k, c)
            out[start:start + k] = p.mean(1).numpy()
    return out


def build_arm_index(l1: TwoTower, l2: Ranker, version: int, market: Marketplace, cfg: Config,
                    ctx: ReferenceContexts, now: float) -> tuple[DeployedIndex, float]:
    """Build an index over the live catalog at ``now``; return it and the wall seconds it took."""
    start = time.perf_counter()
    cat = market.catalog
    live = np.flatnonzero(cat.expires_at > now)
    ad_x = cat.features[live]
    with torch.inference_mode():
        vectors = l1.item_vectors(torch.from_numpy(ad_x)).numpy()
    prior = ctr_prior(l2, ctx, ad_x)
    idx = build_index(vectors, live, cat.ad_id[live], np.full(live.size, version), prior,
                      cfg.funnel.index_factory, now)
    return idx, time.perf_counter() - start
