"""Start-up training on an exploration log (a warm-up period with randomised serving).

Before live traffic starts, ``models.exploration_requests`` requests are served ads drawn
uniformly from the catalog into every slot, and their clicks and conversions are drawn from the
true response (keyed by their own request ids, above :data:`EXPLORATION_ID_BASE`). On that log:

* the L2 ranker learns pCTR from every impression and pCVR from clicked impressions;
* the L1 two-tower model is distilled from L2: for each exploration request, the shown ads plus
  ``models.distill_ads_per_request`` random ads are scored by L2 (the teacher's pCVR), and the
  L1 logit is fit to it, plus the conversion labels of clicked impressions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.config.schema import Config
from sim.models.ranker import Ranker
from sim.models.towers import TwoTower
from sim.models.training import FitReport, distill_two_tower, train_ranker
from sim.rng import Streams
from sim.serving.features import query_inputs, surface_onehot
from sim.world.marketplace import Marketplace
from sim.world.response import draw_outcomes, true_rates
from sim.world.traffic import draw_audience

EXPLORATION_ID_BASE = 1 << 40


@dataclass(frozen=True)
class Bootstrap:
    l1: TwoTower
    l2: Ranker
    l2_fit: FitReport
    l1_fit: FitReport
    impressions: int
    clicks: int
    conversions: int


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def train_initial_models(market: Marketplace, cfg: Config, streams: Streams) -> Bootstrap:
    """Draw the exploration log and train L2, then distill L1 from it."""
    rng = streams.get("exploration")
    gen = torch.Generator().manual_seed(streams.torch_seed("training"))
    torch.manual_seed(streams.torch_seed("init"))  # parameter initialisation (torch's own RNG)
    n, s = cfg.models.exploration_requests, cfg.auction.n_slots
    ns, cat, users = len(cfg.world.surfaces), market.catalog, market.users
    user, surface = draw_audience(rng, n, users, market.surface_mix)
    request_id = EXPLORATION_ID_BASE + np.arange(n, dtype=np.int64)
    slot = rng.integers(0, cat.n, size=(n, s))
    pctr, pcvr = true_rates(market.truth, users.latent[user], surface, cat.latent[slot],
                            cat.creative[slot], cat.quality[slot])
    position = np.broadcast_to(np.arange(s), (n, s))
    pctr = pctr * market.truth.position_ctr[:s]
    out = draw_outcomes(cfg.seed, request_id[:, None], cat.ad_id[slot], pctr, pcvr,
                        cfg.world.conversion_delay_mean_s)

    l2 = Ranker(users.features.shape[1], ns, cat.features.shape[1], cfg.world.latent_dim,
                cfg.models.l2_hidden, s)
    x = l2.inputs(_t(np.repeat(users.features[user], s, axis=0)),
                  _t(np.repeat(surface_onehot(surface, ns), s, axis=0)),
                  _t(cat.features[slot.ravel()]))
    l2_fit = train_ranker(l2, x, torch.from_numpy(position.ravel().astype(np.int64)),
                          _t(out.click.ravel()), _t(out.conversion.ravel()), cfg.models, gen)
    l2.eval()

    k = cfg.models.distill_ads_per_request
    pair_slot = np.concatenate([slot, rng.integers(0, cat.n, size=(n, k))], axis=1)
    width = s + k
    pair_user = np.repeat(user, width)
    pair_surface = np.repeat(surface, width)
    with torch.inference_mode():
        px = l2.inputs(_t(users.features[pair_user]), _t(surface_onehot(pair_surface, ns)),
                       _t(cat.features[pair_slot.ravel()]))
        teacher = torch.sigmoid(l2(px)[:, 1])
    has_label = np.zeros((n, width), dtype=bool)
    has_label[:, :s] = out.click
    label = np.zeros((n, width), dtype=np.float32)
    label[:, :s] = out.conversion
    qx = query_inputs(users, pair_user, pair_surface, ns)
    l1 = TwoTower(qx.shape[1], cat.features.shape[1], cfg.models.embedding_dim,
                  cfg.models.l1_hidden)
    l1_fit = distill_two_tower(l1, _t(qx), _t(cat.features[pair_slot.ravel()]), teacher.clone(),
                               _t(label.ravel()), torch.from_numpy(has_label.ravel()),
                               cfg.models, gen)
    l1.eval()
    return Bootstrap(l1, l2, l2_fit, l1_fit, n * s, int(out.click.sum()),
                     int(out.conversion.sum()))
