"""The per-ad L1 pCTR prior stored beside each index row.

L1 ranks by eCPM, which needs an engagement estimate beside its own pCVR: the L2 ranker's pCTR of
the ad averaged over a fixed set of reference (user, surface) contexts, computed when the index
is built (:mod:`sim.serving.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.config.schema import Config
from sim.models.inputs import surface_onehot
from sim.models.ranker import Ranker
from sim.world.marketplace import Marketplace
from sim.world.traffic import draw_audience

PRIOR_CHUNK_ROWS = 1 << 18  # rows per L2 forward when computing the pCTR prior


@dataclass(frozen=True, kw_only=True)
class ReferenceContexts:
    """A fixed sample of (user, surface) contexts, drawn once per world."""

    user_x: np.ndarray  # (C, Fu) float32
    surface_x: np.ndarray  # (C, n_surfaces) float32


def reference_contexts(market: Marketplace, cfg: Config,
                       rng: np.random.Generator) -> ReferenceContexts:
    user, surface = draw_audience(rng, cfg.funnel.ctr_prior_contexts, market.users,
                                  market.surface_mix)
    return ReferenceContexts(user_x=market.users.features[user],
                             surface_x=surface_onehot(surface, len(cfg.world.surfaces)))


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
