"""Advertisers and their ads: objectives, bids, budgets, latent state and feature families.

The catalog has a fixed number of *slots* (``n_advertisers x ads_per_advertiser``); slot ``s``
always belongs to advertiser ``s // ads_per_advertiser``. When an ad expires, a new ad (a new
``ad_id``) of the same advertiser takes its slot, so arrays keep their shape while ads arrive and
expire. Ids are never reused.

Every observable feature family is a noisy, partial view of the ad's latent state
(:data:`FAMILIES`); the ground truth (``latent``, ``quality``, ``creative``) is kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.clock import DAY_S
from sim.config.schema import FEATURE_FAMILIES, OBJECTIVES, WorldConfig

OCPM, CPC, CPM = 0, 1, 2
OFFSITE_WINDOWS_DAYS = (1, 7, 30, 90)  # the counters themselves: sim.world.offsite
N_ANNOTATIONS = 4
N_IMAGE = 8

FAMILIES: tuple[str, ...] = FEATURE_FAMILIES  # column order of the ad feature matrix


def family_widths(d: int) -> dict[str, int]:
    """Columns of each feature family."""
    return {"base": d + len(OBJECTIVES), "targeting": 3,
            "offsite_conversions": len(OFFSITE_WINDOWS_DAYS),
            "annotations": N_ANNOTATIONS, "image_embedding": N_IMAGE}


def family_slices(d: int) -> dict[str, slice]:
    """Column slice of each family in the ad feature matrix."""
    out, start = {}, 0
    for name, width in family_widths(d).items():
        out[name] = slice(start, start + width)
        start += width
    return out


@dataclass(frozen=True, kw_only=True)
class Advertisers:
    """One row per advertiser. Bids are in currency: per conversion, per click, per mille."""

    objective: np.ndarray  # (A,) int8: OCPM, CPC or CPM
    target_cpa: np.ndarray  # (A,) float64, currency per conversion (ocpm)
    max_cpc: np.ndarray  # (A,) float64, currency per click (cpc)
    cpm_price: np.ndarray  # (A,) float64, currency per 1000 impressions (cpm)
    daily_budget: np.ndarray  # (A,) float64, currency per day
    centroid: np.ndarray  # (A, d) float64, ground truth

    @property
    def n(self) -> int:
        return int(self.objective.shape[0])


@dataclass(frozen=True, kw_only=True)
class FeatureMaps:
    """World constants that turn latent state into observable families."""

    annotation_proj: np.ndarray  # (N_ANNOTATIONS, d)
    image_proj: np.ndarray  # (N_IMAGE, d + 2)
    targeting_bias: np.ndarray  # (3,)
    targeting_weight: np.ndarray  # (3,)


@dataclass(kw_only=True)
class Catalog:
    """The live ads, one per slot. Mutated only by :func:`replace_ads` (ad churn)."""

    ad_id: np.ndarray  # (S,) int64
    advertiser: np.ndarray  # (S,) int32
    latent: np.ndarray  # (S, d) float32, ground truth
    quality: np.ndarray  # (S,) float32, latent conversion quality (logit shift of pCVR)
    creative: np.ndarray  # (S,) float32, latent click quality (logit shift of pCTR)
    created_at: np.ndarray  # (S,) float64 seconds
    expires_at: np.ndarray  # (S,) float64 seconds
    features: np.ndarray  # (S, F) float32, observable families side by side
    next_id: int
    changed_at: np.ndarray = field(init=False)  # (S,) float64 last time the features changed

    def __post_init__(self) -> None:
        self.changed_at = self.created_at.copy()

    @property
    def n(self) -> int:
        return int(self.ad_id.shape[0])


def build_advertisers(cfg: WorldConfig, rng: np.random.Generator) -> Advertisers:
    """Draw objectives by ``objective_mix``, lognormal bids and budgets, latent centroids. With
    ``budget_target_corr`` = rho, the budget's log is rho times the target CPA's standardised log
    plus sqrt(1 - rho^2) times its own (both means and spreads kept); 0 leaves every draw as it
    was."""
    a = cfg.n_advertisers
    shares = np.array([cfg.objective_mix.get(o, 0.0) for o in OBJECTIVES])
    objective = rng.choice(len(OBJECTIVES), size=a, p=shares / shares.sum()).astype(np.int8)

    def spread(mean: float, sigma: float) -> np.ndarray:
        return mean * rng.lognormal(-0.5 * sigma**2, sigma, size=a)

    target_cpa = spread(cfg.target_cpa_mean, cfg.bid_sigma)
    max_cpc = spread(cfg.max_cpc_mean, cfg.bid_sigma)
    cpm_price = spread(cfg.cpm_price_mean, cfg.bid_sigma)
    budget = spread(cfg.daily_budget_mean, cfg.budget_sigma)
    if rho := cfg.budget_target_corr:
        def z(x: np.ndarray, mean: float, sigma: float) -> np.ndarray:
            return (np.log(x / mean) + 0.5 * sigma**2) / sigma
        zb = (rho * z(target_cpa, cfg.target_cpa_mean, cfg.bid_sigma)
              + np.sqrt(1.0 - rho**2) * z(budget, cfg.daily_budget_mean, cfg.budget_sigma))
        budget = cfg.daily_budget_mean * np.exp(-0.5 * cfg.budget_sigma**2 + cfg.budget_sigma * zb)
    return Advertisers(
        objective=objective, target_cpa=target_cpa, max_cpc=max_cpc, cpm_price=cpm_price,
        daily_budget=budget, centroid=rng.normal(0.0, 1.0, size=(a, cfg.latent_dim)),
    )


def build_feature_maps(cfg: WorldConfig, rng: np.random.Generator) -> FeatureMaps:
    d = cfg.latent_dim
    return FeatureMaps(
        annotation_proj=rng.normal(0.0, 1.0 / np.sqrt(d), size=(N_ANNOTATIONS, d)),
        image_proj=rng.normal(0.0, 1.0 / np.sqrt(d + 2), size=(N_IMAGE, d + 2)),
        targeting_bias=rng.normal(-0.5, 0.5, size=3),
        # targeting flags and the image are weak views of conversion quality; the offsite
        # conversion counters (sim.world.offsite) are the strong one
        targeting_weight=rng.uniform(0.2, 0.6, size=3),
    )


def observe_features(
    latent: np.ndarray, quality: np.ndarray, creative: np.ndarray, objective: np.ndarray,
    maps: FeatureMaps, noise: float, rng: np.random.Generator,
) -> np.ndarray:
    """Observable feature families of ads (n, F) from their latent state; see :data:`FAMILIES`.
    The ``offsite_conversions`` columns are left at 0: the counters (:mod:`sim.world.offsite`)
    write them."""
    n, d = latent.shape
    base = np.concatenate(
        [latent + rng.normal(0.0, noise, size=(n, d)),
         np.eye(len(OBJECTIVES))[objective]], axis=1)
    logits = quality[:, None] * maps.targeting_weight + maps.targeting_bias
    targeting = (rng.random((n, 3)) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    offsite = np.zeros((n, len(OFFSITE_WINDOWS_DAYS)))
    annotations = latent @ maps.annotation_proj.T + rng.normal(0.0, noise, size=(n, N_ANNOTATIONS))
    state = np.concatenate([latent, creative[:, None], 0.2 * quality[:, None]], axis=1)
    image = state @ maps.image_proj.T + rng.normal(0.0, noise, size=(n, N_IMAGE))
    return np.concatenate([base, targeting, offsite, annotations, image], axis=1).astype(np.float32)


def _draw_ads(
    slots: np.ndarray, adv: Advertisers, cfg: WorldConfig, maps: FeatureMaps, now: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    owner = (slots // cfg.ads_per_advertiser).astype(np.int32)
    n = slots.shape[0]
    latent = adv.centroid[owner] * 0.7 + rng.normal(0.0, 0.7, size=(n, cfg.latent_dim))
    quality = np.asarray(rng.normal(0.0, cfg.quality_sigma, size=n))
    creative = np.asarray(rng.normal(0.0, cfg.creative_sigma, size=n))
    lifetime = np.asarray(rng.exponential(cfg.ad_lifetime_days * DAY_S, size=n))
    feats = observe_features(latent, quality, creative, adv.objective[owner], maps,
                             cfg.feature_noise, rng)
    return owner, latent.astype(np.float32), quality.astype(np.float32), \
        creative.astype(np.float32), now + lifetime, feats


def build_catalog(
    cfg: WorldConfig, adv: Advertisers, maps: FeatureMaps, rng: np.random.Generator
) -> Catalog:
    """The initial catalog at time 0 (ads already live, with residual lifetimes)."""
    s = cfg.n_advertisers * cfg.ads_per_advertiser
    slots = np.arange(s)
    owner, latent, quality, creative, expires, feats = _draw_ads(slots, adv, cfg, maps, 0.0, rng)
    return Catalog(ad_id=np.arange(s, dtype=np.int64), advertiser=owner, latent=latent, quality=quality,
                   creative=creative, created_at=np.zeros(s), expires_at=expires, features=feats, next_id=s)


def replace_ads(
    cat: Catalog, now: float, adv: Advertisers, cfg: WorldConfig, maps: FeatureMaps,
    rng: np.random.Generator,
) -> np.ndarray:
    """Replace every ad expired by ``now`` with a new ad of the same advertiser; return the slots."""
    slots = np.flatnonzero(cat.expires_at <= now)
    if slots.size == 0:
        return slots
    _, latent, quality, creative, expires, feats = _draw_ads(slots, adv, cfg, maps, now, rng)
    cat.ad_id[slots] = np.arange(cat.next_id, cat.next_id + slots.size)
    cat.next_id += int(slots.size)
    cat.latent[slots], cat.quality[slots], cat.creative[slots] = latent, quality, creative
    cat.created_at[slots], cat.expires_at[slots], cat.changed_at[slots] = now, expires, now
    cat.features[slots] = feats
    return slots


def refresh_features(
    cat: Catalog, now: float, share: float, adv: Advertisers, cfg: WorldConfig, maps: FeatureMaps,
    rng: np.random.Generator,
) -> np.ndarray:
    """Re-observe the features of a random ``share`` of ads (a creative or metadata update): the
    latent state stays, the noisy views change (the offsite counters are kept). Returns the
    changed slots."""
    slots = np.flatnonzero(rng.random(cat.n) < share)
    if slots.size:
        owner = cat.advertiser[slots]
        offsite = family_slices(cfg.latent_dim)["offsite_conversions"]
        kept = cat.features[slots, offsite]
        cat.features[slots] = observe_features(
            cat.latent[slots].astype(np.float64), cat.quality[slots].astype(np.float64),
            cat.creative[slots].astype(np.float64), adv.objective[owner], maps,
            cfg.feature_noise, rng)
        cat.features[slots, offsite] = kept
        cat.changed_at[slots] = now
    return slots
