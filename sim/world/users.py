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
    features: np.ndarray  # (n_users, latent_dim + n_segments [+ 1 with bots]) float32, observable
    bot: np.ndarray | None = None  # (n_users,) bool, ground truth; None: a world without bots
    # (n_users,) the observed log request rate over the median user's (with the features'
    # noise), a world with bots only: the last feature column, or what its flag is read from
    rate: np.ndarray | None = None
    bot_ctr_shift: float = 0.0  # a bot's logit shifts of true pCTR and pCVR
    bot_cvr_shift: float = 0.0

    @property
    def n(self) -> int:
        return int(self.latent.shape[0])

    @property
    def request_rate(self) -> np.ndarray | None:
        """(n_users,) the observable log request rate (over the median user's, with the features'
        noise) in a world with bots, None without."""
        return self.rate

    def logit_shifts(self, user: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The (pCTR, pCVR) logit shifts of the users ``user`` (B,) each, None without bots."""
        if self.bot is None:
            return None
        b = self.bot[user].astype(np.float64)
        return b * self.bot_ctr_shift, b * self.bot_cvr_shift


def build_users(world: WorldConfig, traffic: TrafficConfig, rng: np.random.Generator) -> Users:
    """Draw users around segment centroids; features are the latent plus noise and the segment.

    With ``world.bot_share`` > 0, that share of users (drawn after everything else, so the humans
    are those of the world without bots) are bots: their activity is ``bot_activity`` times
    their drawn one, and every user's features end with a column: the user's log request rate
    against the median user's plus observation noise (``feature_noise``), or, with
    ``bot_signal`` "flag", 1 where that rate is above ``log(bot_flag_rate)`` and 0 elsewhere."""
    d, n, k = world.latent_dim, world.n_users, world.n_segments
    centroids = rng.normal(0.0, 1.0, size=(k, d))
    segment = rng.integers(0, k, size=n)
    latent = 0.8 * centroids[segment] + rng.normal(0.0, 0.6, size=(n, d))
    activity = rng.lognormal(0.0, traffic.user_activity_sigma, size=n)
    observed = latent + rng.normal(0.0, world.feature_noise, size=(n, d))
    onehot = np.eye(k, dtype=np.float32)[segment]
    features = np.concatenate([observed.astype(np.float32), onehot], axis=1)
    bot = rate = None
    if world.bot_share > 0:
        bot = rng.random(n) < world.bot_share
        activity = np.where(bot, activity * world.bot_activity, activity)
        rate = (np.log(activity / np.median(activity))
                + rng.normal(0.0, world.feature_noise, n)).astype(np.float32)
        column = rate if world.bot_signal == "rate" else (
            rate > np.log(world.bot_flag_rate)).astype(np.float32)
        features = np.concatenate([features, column[:, None]], axis=1)
    cdf = np.cumsum(activity / activity.sum())
    cdf[-1] = 1.0
    return Users(latent=latent.astype(np.float32), segment=segment.astype(np.int16), activity_cdf=cdf,
                 features=features, bot=bot, rate=rate, bot_ctr_shift=world.bot_ctr_shift,
                 bot_cvr_shift=world.bot_cvr_shift)
