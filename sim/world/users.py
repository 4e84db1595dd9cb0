"""Users: latent preference vectors, segments, activity, and the observable user features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config.schema import TrafficConfig, WorldConfig


@dataclass(frozen=True, kw_only=True)
class Users:
    """The user population. Row ``i`` of every array is user ``i`` (the user id)."""

    latent: np.ndarray  # (n_users, latent_dim) float32, ground truth
    segment: np.ndarray  # (n_users,) int16
    activity_cdf: np.ndarray  # (n_users,) float64, cumulative request share
    features: np.ndarray  # (n_users, latent_dim + n_segments) float32, observable

    @property
    def n(self) -> int:
        return int(self.latent.shape[0])


def build_users(world: WorldConfig, traffic: TrafficConfig, rng: np.random.Generator) -> Users:
    """Draw users around segment centroids; features are the latent plus noise and the segment."""
    d, n, k = world.latent_dim, world.n_users, world.n_segments
    centroids = rng.normal(0.0, 1.0, size=(k, d))
    segment = rng.integers(0, k, size=n)
    latent = 0.8 * centroids[segment] + rng.normal(0.0, 0.6, size=(n, d))
    activity = rng.lognormal(0.0, traffic.user_activity_sigma, size=n)
    cdf = np.cumsum(activity / activity.sum())
    cdf[-1] = 1.0
    observed = latent + rng.normal(0.0, world.feature_noise, size=(n, d))
    onehot = np.eye(k, dtype=np.float32)[segment]
    features = np.concatenate([observed.astype(np.float32), onehot], axis=1)
    return Users(latent=latent.astype(np.float32), segment=segment.astype(np.int16), activity_cdf=cdf,
                 features=features)
