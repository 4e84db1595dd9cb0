"""Start-up training on an exploration log (a warm-up period with randomised serving).

Before live traffic starts, ``training.exploration_requests`` requests are served ads drawn
uniformly from the catalog into every slot, and their clicks and conversions are drawn from the
true response (keyed by their own request ids, above :data:`EXPLORATION_ID_BASE`); every
conversion of the warm-up is known by time 0. On that log:

* the L2 ranker (version 1 of ``<arm>/l2``) learns pCTR from every impression and pCVR from the
  clicked ones;
* each L1 lineage's version 1 is distilled from L2: the shown ads plus
  ``training.distill_ads_per_request`` random ads per request are scored by the L2 teacher, and the
  L1 logit is fit to its pCVR, plus the conversion labels of clicked impressions.
"""

from __future__ import annotations

import numpy as np
import torch

from sim.config.schema import Config
from sim.features.registry import FeatureRegistry, bits, feature_view, fill_default
from sim.models.checkpoints import Checkpoints
from sim.models.families import make_l1, parameter_count
from sim.models.fitting import RngState, fit_l1, fit_l2, torch_draws
from sim.models.label_join import pipeline_rows
from sim.models.ranker import Ranker
from sim.models.registry import ModelVersion, Registry
from sim.models.training_log import FULL, WINNER, LoggedRows
from sim.rng import Streams
from sim.world.catalog import Catalog, family_slices
from sim.world.delay import ConversionDelay
from sim.world.marketplace import Marketplace
from sim.world.response import draw_outcomes, true_rates
from sim.world.traffic import draw_audience
from sim.world.users import Users

EXPLORATION_ID_BASE = 1 << 40


def exploration_rows(market: Marketplace, cfg: Config, streams: Streams) -> LoggedRows:
    """The exploration log: shown impressions (WINNER rows) and random unshown pairs (FULL rows)."""
    rng = streams.get("exploration")
    n, s, k = cfg.training.exploration_requests, cfg.auction.n_slots, cfg.training.distill_ads_per_request
    cat, users = market.catalog, market.users
    user, surface = draw_audience(rng, n, users, market.surface_mix)
    request_id = EXPLORATION_ID_BASE + np.arange(n, dtype=np.int64)
    slot = rng.integers(0, cat.n, size=(n, s + k))
    pctr, pcvr = true_rates(market.truth, users.latent[user], surface, cat.latent[slot],
                            cat.creative[slot], cat.quality[slot], users.logit_shifts(user))
    shown = np.zeros((n, s + k), dtype=bool)
    shown[:, :s] = True
    position = np.where(shown, np.arange(s + k), -1).astype(np.int16)
    pctr_pos = pctr * np.where(shown, market.truth.position_ctr[np.minimum(np.arange(s + k), s - 1)], 1)
    out = draw_outcomes(cfg.seed, request_id[:, None], cat.ad_id[slot], pctr_pos, pcvr,
                        ConversionDelay.from_config(cfg.world))
    click = out.click & shown
    conv_time = np.where(click & out.conversion, -0.5, np.inf)
    m = n * (s + k)
    logged = FeatureRegistry.from_config(cfg.features).families("training_logs")
    features = fill_default(cat.features[slot.ravel()], logged, family_slices(cfg.world.latent_dim))
    return LoggedRows(
        time=np.full(m, -1.0), arm=np.zeros(m, np.int8), user=np.repeat(user, s + k),
        surface=np.repeat(surface, s + k), ad_features=features,
        ad_id=cat.ad_id[slot].ravel(), source=np.where(shown, WINNER, FULL).astype(np.int8).ravel(),
        tier=np.zeros(m, np.int8), item_version=np.zeros(m, np.int32),
        query_version=np.zeros(m, np.int32), position=position.ravel(), click=click.ravel(),
        conversion_time=conv_time.ravel(), true_pcvr=pcvr.ravel(),
        l1_pcvr=np.full(m, np.nan, np.float32), families=np.full(m, bits(logged), np.uint8))


def train_initial_models(market: Marketplace, cfg: Config, streams: Streams, registry: Registry,
                         plan: list[tuple[str, Config, dict[str, str]]],
                         checkpoints: Checkpoints | None = None) -> dict[str, int]:
    """Register version 1 of each arm's L2 lineage and its L1 lineages (lineage -> family).

    ``plan`` lists ``(l2 lineage, arm config, L1 lineages)``. Every arm trains from the same
    exploration log with the same seeds, so two arms with the same config get the same models."""
    rows = exploration_rows(market, cfg, streams)
    users, cat = market.users, market.catalog
    # every L2 learns a bias for each slot any arm auctions: under pooled training it trains on
    # the impressions of both arms, and an arm may have more slots than the control
    n_positions = max(acfg.auction.n_slots for _, acfg, _ in plan)
    for l2_lineage, acfg, l1s in plan:
        gen = torch.Generator().manual_seed(streams.torch_seed("training/1"))
        with torch_draws(streams.torch_seed("init")):  # parameter initialisation
            _train_arm(pipeline_rows(rows, 0.0, acfg), users, cat, n_positions, l2_lineage,
                       acfg, l1s, gen, registry, checkpoints)
    shown = rows.source == WINNER
    return {"impressions": int(shown.sum()), "clicks": int(rows.click.sum()),
            "conversions": int(np.isfinite(rows.conversion_time).sum())}


def _train_arm(rows: LoggedRows, users: Users, cat: Catalog, n_positions: int, l2_lineage: str,
               acfg: Config, l1s: dict[str, str], gen: torch.Generator, registry: Registry,
               checkpoints: Checkpoints | None) -> None:
    """Version 1 of an arm's L2 and of its L1 lineages, each L1 beside the arm's own starting
    where the arm's own L1 ended (:class:`sim.models.fitting.RngState`)."""
    l2 = Ranker(users.features.shape[1], len(acfg.world.surfaces), cat.features.shape[1],
                acfg.world.latent_dim, acfg.models.l2_hidden, n_positions)
    fit = fit_l2(l2, rows, 0.0, users, acfg, acfg.training, gen, fit_norm=True,
                 checkpoints=checkpoints)
    known, late = rows.positives(0.0)
    registry.register(ModelVersion(
        lineage=l2_lineage, version=1, kind="l2", family="ranker", trained_at=0.0,
        window_start=-1.0, window_end=0.0, feature_view=feature_view(rows.families),
        rows=int((rows.source == WINNER).sum()), train_loss=fit.loss, epochs=fit.epochs,
        parameters=parameter_count(l2), model=l2, positives=known, late_positives=late))
    draws: RngState | None = None  # where each readiness lineage's draws start
    for lineage, family in l1s.items():
        if draws is not None:
            draws.restore(gen)
        l1 = make_l1(family, acfg)
        fit = fit_l1(l1, l2, rows, 0.0, users, acfg, acfg.training, gen, fit_norm=True,
                     checkpoints=checkpoints)
        view = feature_view(rows.families, list(acfg.models.l1_features))
        registry.register(ModelVersion(
            lineage=lineage, version=1, kind="l1", family=family, trained_at=0.0,
            window_start=-1.0, window_end=0.0, feature_view=view, rows=len(rows),
            train_loss=fit.loss, epochs=fit.epochs, parameters=parameter_count(l1), model=l1,
            positives=known, late_positives=late))
        if draws is None:
            draws = RngState.take(gen)  # after the arm's own L1
