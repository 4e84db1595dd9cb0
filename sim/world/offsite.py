"""Offsite conversion visit counters: the ``offsite_conversions`` feature family.

An ad's offsite conversion visits over the last 1, 7, 30 and 90 days are what the advertiser's
site reports: *organic* visits (a Poisson stream at ``world.offsite_organic_per_day`` x
exp(quality + noise) per day, so the counts are a noisy view of the ad's latent conversion
quality) plus the conversions the world itself produces for the ad. The feature job recomputes
the counters every ``world.offsite_refresh_interval_s`` over the last W *complete* days and
writes ``log1p(count)`` into the catalog's feature columns.

So a new ad starts at zero (cold start) and an ad the funnel shows a lot converts more and
counts more (a feedback loop through the world's own conversions). The counters are read live
by the L2 store and the training logs; an ad's vector in the ANN index keeps the counts it had
when it was embedded (a refresh does not trigger re-embedding).

The initial catalog's ads have a history of organic visits (their age before time 0 is drawn
from the ad lifetime distribution). Own conversions are kept per ad and day in a 91-day ring;
conversions whose day has not ended wait in a pending list, so memory is bounded by the catalog
and one day of conversions, not by the run's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.clock import DAY_S
from sim.world.catalog import OFFSITE_WINDOWS_DAYS as WINDOWS_DAYS

RING_DAYS = 91
QUALITY_NOISE = 0.3  # logit noise between an ad's quality and its organic visit rate


@dataclass(kw_only=True)
class OffsiteCounter:
    rate: np.ndarray  # (S,) organic visits per day
    history_days: np.ndarray  # (S,) days the ad existed before ``created_at`` counted from
    created_at: np.ndarray  # (S,) seconds
    ad_id: np.ndarray  # (S,) the ad the slot's counts belong to
    ring: np.ndarray  # (S, RING_DAYS) uint16 own conversions per day, bin = day % RING_DAYS
    ring_day: np.ndarray  # (RING_DAYS,) int64 the day each bin holds (-1 = none)
    # (slot, ad_id, time) chunks of conversions not yet settled into the ring, one per record()
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]]

    @staticmethod
    def empty(n: int) -> OffsiteCounter:
        return OffsiteCounter(rate=np.zeros(n), history_days=np.zeros(n), created_at=np.zeros(n),
                              ad_id=np.full(n, -1, np.int64), ring=np.zeros((n, RING_DAYS), np.uint16),
                              ring_day=np.full(RING_DAYS, -1, np.int64), pending=[])

    def new_ads(self, slots: np.ndarray, ad_id: np.ndarray, quality: np.ndarray, now: float,
                organic_per_day: float, history_days: np.ndarray,
                rng: np.random.Generator) -> None:
        """Start the counters of new ads in ``slots`` (their own conversions at zero)."""
        noise = rng.normal(0.0, QUALITY_NOISE, size=slots.size)
        self.rate[slots] = organic_per_day * np.exp(quality.astype(np.float64) + noise)
        self.history_days[slots] = history_days
        self.created_at[slots] = now
        self.ad_id[slots] = ad_id
        self.ring[slots] = 0

    def record(self, slot: np.ndarray, ad_id: np.ndarray, time: np.ndarray) -> None:
        """Conversions the world produced (at ``time``, possibly in the future)."""
        self.pending.append((slot.astype(np.int64), ad_id.astype(np.int64),
                             time.astype(np.float64)))

    def _settle(self, day: int) -> None:
        """Move pending conversions of days before ``day`` into the ring."""
        if not self.pending:
            return
        s, a, t = (np.concatenate(parts) for parts in zip(*self.pending, strict=True))
        conv_day = np.floor(t / DAY_S).astype(np.int64)
        done = conv_day < day
        keep = done & (self.ad_id[s] == a) & (conv_day > day - RING_DAYS)  # ad still in its slot
        for d in np.unique(conv_day[keep]):  # a few days at most: a loop over days, not rows
            b = int(d % RING_DAYS)
            if self.ring_day[b] != d:
                self.ring[:, b] = 0
                self.ring_day[b] = d
            m = keep & (conv_day == d)
            np.add.at(self.ring[:, b], s[m], 1)
        self.pending = [(s[~done], a[~done], t[~done])]

    def counts(self, now: float, rng: np.random.Generator) -> np.ndarray:
        """(S, 4) visits over the last 1, 7, 30, 90 complete days before ``now``."""
        day = int(np.floor(now / DAY_S))
        self._settle(day)
        age = self.history_days + np.maximum(now - self.created_at, 0.0) / DAY_S
        out = np.empty((self.rate.size, len(WINDOWS_DAYS)))
        for j, w in enumerate(WINDOWS_DAYS):  # four windows
            days = np.arange(day - w, day)
            bins = days % RING_DAYS
            valid = self.ring_day[bins] == days
            own = self.ring[:, bins[valid]].sum(axis=1, dtype=np.int64)
            out[:, j] = rng.poisson(self.rate * np.minimum(age, w)) + own
        return out

    def write(self, features: np.ndarray, columns: slice, now: float,
              rng: np.random.Generator) -> None:
        """Recompute every ad's counters and write ``log1p(counts)`` into ``features[:, columns]``."""
        features[:, columns] = np.log1p(self.counts(now, rng)).astype(np.float32)
