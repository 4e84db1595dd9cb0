"""The marketplace: every piece of ground truth of one world, built from the run's named streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.clock import DAY_S
from sim.config.schema import Config
from sim.rng import Streams
from sim.world.catalog import (
    Advertisers,
    Catalog,
    FeatureMaps,
    build_advertisers,
    build_catalog,
    build_feature_maps,
    family_slices,
    refresh_features,
    replace_ads,
)
from sim.world.offsite import OffsiteCounter
from sim.world.response import Truth, build_truth
from sim.world.users import Users, build_users


@dataclass(kw_only=True)
class Marketplace:
    users: Users
    advertisers: Advertisers
    maps: FeatureMaps
    catalog: Catalog
    truth: Truth
    surface_mix: np.ndarray  # (n_surfaces,) request share
    offsite: OffsiteCounter
    offsite_rng: np.random.Generator

    def refresh_offsite(self, now: float) -> None:
        """The offsite feature job: recompute every ad's counters into its feature columns."""
        cols = family_slices(self.catalog.latent.shape[1])["offsite_conversions"]
        self.offsite.write(self.catalog.features, cols, now, self.offsite_rng)


def build_marketplace(cfg: Config, streams: Streams) -> Marketplace:
    """Draw users, advertisers, feature maps, the initial catalog and the response constants."""
    w = cfg.world
    # one named stream per component: adding advertisers never shifts the feature maps or truth
    users = build_users(w, cfg.traffic, streams.get("users"))
    adv = build_advertisers(w, streams.get("advertisers"))
    maps = build_feature_maps(w, streams.get("feature_maps"))
    catalog = build_catalog(w, adv, maps, streams.get("catalog"))
    truth = build_truth(w, streams.get("truth"))
    mix = np.asarray(w.surface_mix, dtype=np.float64)
    offsite_rng = streams.get("offsite")
    offsite = OffsiteCounter.empty(catalog.n)
    history = offsite_rng.exponential(w.ad_lifetime_days, size=catalog.n)  # age before time 0
    offsite.new_ads(np.arange(catalog.n), catalog.ad_id, catalog.quality, 0.0,
                    w.offsite_organic_per_day, history, offsite_rng)
    market = Marketplace(users=users, advertisers=adv, maps=maps, catalog=catalog, truth=truth,
                         surface_mix=mix / mix.sum(), offsite=offsite, offsite_rng=offsite_rng)
    market.refresh_offsite(0.0)
    return market


def churn(market: Marketplace, cfg: Config, now: float, rng: np.random.Generator) -> np.ndarray:
    """Replace the ads expired by ``now`` and refresh the features of a share of the others
    (``world.feature_refresh_per_day`` pro rata); return the replaced slots."""
    w = cfg.world
    share = min(1.0, w.feature_refresh_per_day * w.churn_interval_s / DAY_S)
    refresh_features(market.catalog, now, share, market.advertisers, w, market.maps, rng)
    cat = market.catalog
    slots = replace_ads(cat, now, market.advertisers, w, market.maps, rng)
    if slots.size:
        market.offsite.new_ads(slots, cat.ad_id[slots], cat.quality[slots], now,
                               w.offsite_organic_per_day, np.zeros(slots.size), market.offsite_rng)
    return slots
