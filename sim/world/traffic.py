"""Request arrivals: a diurnal Poisson process, drawn one tick at a time as one batch.

The rate is ``mean * (1 + A cos(2 pi (t/day - peak/24)))`` requests per second, or, with
``traffic.hourly_shares`` (24 shares of the day's requests, as published traffic curves give it),
constant within each hour at that hour's share. Either way its integral is exact (analytic, or
piecewise linear), so a tick's expected count and the share of a day's traffic seen by time ``t``
(the pacing controller's spend profile) are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.clock import DAY_S
from sim.config.schema import TrafficConfig
from sim.world.users import Users


@dataclass(frozen=True, kw_only=True)
class RequestBatch:
    """One tick's requests, sorted by time. All arrays have shape (n,)."""

    request_id: np.ndarray  # int64, unique over the run
    time: np.ndarray  # float64 seconds
    user: np.ndarray  # int64 user id
    segment: np.ndarray  # int16
    surface: np.ndarray  # int8 index into world.surfaces

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    def take(self, idx: np.ndarray) -> RequestBatch:
        """The sub-batch of rows ``idx``."""
        return RequestBatch(request_id=self.request_id[idx], time=self.time[idx], user=self.user[idx],
                            segment=self.segment[idx], surface=self.surface[idx])


def cumulative_rate(t: np.ndarray | float, cfg: TrafficConfig) -> np.ndarray | float:
    """Expected requests in [0, t] (t in seconds)."""
    if cfg.hourly_shares:
        days = np.floor(np.asarray(t, dtype=np.float64) / DAY_S)
        hours = (np.asarray(t, dtype=np.float64) - days * DAY_S) / 3600.0
        done = np.interp(hours, np.arange(25.0), np.concatenate(([0.0], np.cumsum(cfg.hourly_shares))))
        out = cfg.requests_per_day * (days + done / sum(cfg.hourly_shares))
        return out if np.ndim(t) else float(out)
    mean = cfg.requests_per_day / DAY_S
    w = 2.0 * np.pi / DAY_S
    phase = 2.0 * np.pi * cfg.peak_hour / 24.0
    return mean * (t + cfg.diurnal_amplitude * (np.sin(w * t - phase) + np.sin(phase)) / w)


def day_share(t: float, cfg: TrafficConfig) -> float:
    """Share of its day's expected traffic that has arrived by time ``t`` (in [0, 1])."""
    start = np.floor(t / DAY_S) * DAY_S
    done = cumulative_rate(t, cfg) - cumulative_rate(start, cfg)
    total = cumulative_rate(start + DAY_S, cfg) - cumulative_rate(start, cfg)
    return float(done / total)


def draw_audience(rng: np.random.Generator, n: int, users: Users,
                  surface_mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` users drawn by activity and their surfaces: (n,) int64 and (n,) int8."""
    user = np.searchsorted(users.activity_cdf, rng.random(n), side="right").astype(np.int64)
    user = np.minimum(user, users.n - 1)
    surface = np.searchsorted(np.cumsum(surface_mix), rng.random(n), side="right")
    return user, np.minimum(surface, len(surface_mix) - 1).astype(np.int8)


def draw_requests(
    rng: np.random.Generator,
    t0: float,
    t1: float,
    cfg: TrafficConfig,
    users: Users,
    surface_mix: np.ndarray,
    first_id: int,
) -> RequestBatch:
    """The requests arriving in [t0, t1): Poisson count, inhomogeneous times, users by activity."""
    expected = float(cumulative_rate(t1, cfg) - cumulative_rate(t0, cfg))
    n = int(rng.poisson(expected))
    # Thinning-free draw of arrival times: invert the cumulative rate on a fine grid.
    grid = np.linspace(t0, t1, 65)
    cum = np.asarray(cumulative_rate(grid, cfg))
    times = np.sort(np.interp(rng.uniform(cum[0], cum[-1], size=n), cum, grid))
    user, surface = draw_audience(rng, n, users, surface_mix)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return RequestBatch(request_id=ids, time=times, user=user, segment=users.segment[user], surface=surface)
