"""Start-up training on an exploration log (a warm-up period with randomised serving).

Before live traffic starts, ``training.exploration_requests`` requests are served ads drawn
uniformly from the catalog into every slot, and their clicks and conversions are drawn from the
true response (keyed by their own request ids, above :data:`EXPLORATION_ID_BASE`); every
conversion of the warm-up is known by time 0. Its draws and the start-up models' (initialisation,
training batches) come from the streams the caller passes: the run's, or with
``training.startup_seed`` set that seed's (:func:`sim.build.build_world`), so that in one
marketplace every run seed starts from the same log and models. On that log:

* the L2 ranker (version 1 of ``<arm>/l2``) learns pCTR from every impression and pCVR from the
  clicked ones;
* each L1 lineage's version 1 is distilled from L2: the shown ads plus
  ``training.distill_ads_per_request`` random ads per request are scored by the L2 teacher, and the
  L1 logit is fit to its pCVR, plus the conversion labels of clicked impressions.
"""

from __future__ import annotations

import math

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
from sim.rng import EXPLORATION_KEEP, Streams, keyed_uniform
from sim.world.catalog import Catalog, family_slices
from sim.world.delay import ConversionDelay
from sim.world.marketplace import Marketplace
from sim.world.response import draw_outcomes, true_rates
from sim.world.traffic import draw_audience
from sim.world.users import Users

EXPLORATION_ID_BASE = 1 << 40
EXPLORATION_CHUNK = 100_000  # requests drawn at once (a default log is one chunk)


def exploration_rows(market: Marketplace, cfg: Config, streams: Streams) -> LoggedRows:
    """The exploration log: shown impressions (WINNER rows) and random unshown pairs (FULL rows),
    drawn :data:`EXPLORATION_CHUNK` requests at a time.

    With ``training.exploration_negative_rate`` w below 1 the log keeps every clicked impression,
    a w share of the unclicked ones and a w share of the unshown pairs (negative downsampling; a
    keyed draw per row, so the kept rows are a subset of the whole log's at the same seed): a log
    many times longer for the rows of a short one. The ranker's click logit then trains offset by
    -log w, which undoes the sampling in expectation (among kept rows the odds of a click are the
    population's divided by w), and L1's distillation weighs each kept unclicked row by 1 / w
    (:func:`train_initial_models`)."""
    rng = streams.get("exploration")
    tc = cfg.training
    n, w = tc.exploration_requests, tc.exploration_negative_rate
    logged = FeatureRegistry.from_config(cfg.features).families("training_logs")
    parts = [_exploration_chunk(market, cfg, rng, streams.seed, start,
                                min(EXPLORATION_CHUNK, n - start), w, logged)
             for start in range(0, n, EXPLORATION_CHUNK)]
    return parts[0] if len(parts) == 1 else LoggedRows.concat(parts)


def _exploration_chunk(market: Marketplace, cfg: Config, rng: np.random.Generator, seed: int,
                       start: int, n: int, w: float, logged: frozenset[str]) -> LoggedRows:
    """Requests ``start .. start + n`` of the exploration log, the unclicked rows kept at ``w``;
    its clicks, conversions and kept rows are keyed draws at ``seed`` (the start-up's)."""
    cat, users = market.catalog, market.users
    s, k = cfg.auction.n_slots, cfg.training.distill_ads_per_request
    user, surface = draw_audience(rng, n, users, market.surface_mix)
    request_id = EXPLORATION_ID_BASE + start + np.arange(n, dtype=np.int64)
    slot = rng.integers(0, cat.n, size=(n, s + k))
    pctr, pcvr = true_rates(market.truth, users.latent[user], surface, cat.latent[slot],
                            cat.creative[slot], cat.quality[slot], users.logit_shifts(user))
    shown = np.zeros((n, s + k), dtype=bool)
    shown[:, :s] = True
    position = np.where(shown, np.arange(s + k), -1).astype(np.int16)
    pctr_pos = pctr * np.where(shown, market.truth.position_ctr[np.minimum(np.arange(s + k), s - 1)], 1)
    out = draw_outcomes(seed, request_id[:, None], cat.ad_id[slot], pctr_pos, pcvr,
                        ConversionDelay.from_config(cfg.world))
    click = out.click & shown
    conv_time = np.where(click & out.conversion, -0.5, np.inf)
    keep: np.ndarray | slice = slice(None)
    if w < 1.0:
        column = np.arange(s + k, dtype=np.int64)
        keep = (click | (keyed_uniform(seed, request_id[:, None], column, EXPLORATION_KEEP)
                         < w)).ravel()
    features = fill_default(cat.features[slot.ravel()[keep]], logged,
                            family_slices(cfg.world.latent_dim))
    ad_id = cat.ad_id[slot].ravel()[keep]
    kept = len(ad_id)
    return LoggedRows(
        time=np.full(kept, -1.0), arm=np.zeros(kept, np.int8),
        user=np.repeat(user, s + k)[keep], surface=np.repeat(surface, s + k)[keep],
        ad_features=features, ad_id=ad_id,
        source=np.where(shown, WINNER, FULL).astype(np.int8).ravel()[keep],
        tier=np.zeros(kept, np.int8), item_version=np.zeros(kept, np.int32),
        query_version=np.zeros(kept, np.int32), position=position.ravel()[keep],
        click=click.ravel()[keep], conversion_time=conv_time.ravel()[keep],
        true_pcvr=pcvr.ravel()[keep], l1_pcvr=np.full(kept, np.nan, np.float32),
        families=np.full(kept, bits(logged), np.uint8))


def train_initial_models(market: Marketplace, cfg: Config, streams: Streams, registry: Registry,
                         plan: list[tuple[str, Config, dict[str, str]]],
                         checkpoints: Checkpoints | None = None) -> dict[str, int]:
    """Register version 1 of each arm's L2 lineage and its L1 lineages (lineage -> family).

    ``plan`` lists ``(l2 lineage, arm config, L1 lineages)``. Every arm trains from the same
    exploration log with the same seeds, so two arms with the same config get the same models.
    Returns the log's served impressions, clicks and conversions (all of them kept, whatever its
    negative rate)."""
    rows = exploration_rows(market, cfg, streams)
    users, cat = market.users, market.catalog
    # every L2 learns a bias for each slot any arm auctions: under pooled training it trains on
    # the impressions of both arms, and an arm may have more slots than the control
    n_positions = max(acfg.auction.n_slots for _, acfg, _ in plan)
    for l2_lineage, acfg, l1s in plan:
        gen = torch.Generator().manual_seed(streams.torch_seed("training/1"))
        with torch_draws(streams.torch_seed("init")):  # parameter initialisation
            _train_arm(pipeline_rows(rows, 0.0, acfg), users, cat, n_positions, l2_lineage,
                       acfg, l1s, gen, registry, checkpoints, cfg.training.exploration_negative_rate)
    served = cfg.training.exploration_requests * cfg.auction.n_slots
    return {"impressions": served, "clicks": int(rows.click.sum()),
            "conversions": int(np.isfinite(rows.conversion_time).sum())}


def _train_arm(rows: LoggedRows, users: Users, cat: Catalog, n_positions: int, l2_lineage: str,
               acfg: Config, l1s: dict[str, str], gen: torch.Generator, registry: Registry,
               checkpoints: Checkpoints | None, negative_rate: float) -> None:
    """Version 1 of an arm's L2 and of its L1 lineages, each L1 beside the arm's own starting
    where the arm's own L1 ended (:class:`sim.models.fitting.RngState`). ``rows`` keep their
    unclicked rows at ``negative_rate`` w: L2's click logit trains offset by -log w
    (:func:`sim.models.training.train_ranker`), and L1's distillation weighs an unclicked row by
    1 / w (the distilled pairs weighted as the whole log's)."""
    l2 = Ranker(users.features.shape[1], len(acfg.world.surfaces), cat.features.shape[1],
                acfg.world.latent_dim, acfg.models.l2_hidden, n_positions)
    fit = fit_l2(l2, rows, 0.0, users, acfg, acfg.training, gen, fit_norm=True,
                 checkpoints=checkpoints, ctr_offset=-math.log(negative_rate))
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
                     checkpoints=checkpoints, unclicked_weight=1.0 / negative_rate)
        view = feature_view(rows.families, list(acfg.models.l1_features))
        registry.register(ModelVersion(
            lineage=lineage, version=1, kind="l1", family=family, trained_at=0.0,
            window_start=-1.0, window_end=0.0, feature_view=view, rows=len(rows),
            train_loss=fit.loss, epochs=fit.epochs, parameters=parameter_count(l1), model=l1,
            positives=known, late_positives=late))
        if draws is None:
            draws = RngState.take(gen)  # after the arm's own L1
