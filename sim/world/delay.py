"""Click-to-conversion delays: the distribution a world draws them from, and its CDF.

Two shapes (``world.conversion_delay``):

* ``exponential`` (the default): mean ``world.conversion_delay_mean_s``. Light-tailed: with a
  6-hour mean, 15% of conversions arrive within an hour and 98% within a day.
* ``lognormal``: a mixture of lognormal components, component ``k`` with weight
  ``conversion_delay_weights[k]``, median ``conversion_delay_medians_s[k]`` and shape
  ``conversion_delay_sigmas[k]``. Heavy-tailed: real attribution data report about a third of
  conversions within an hour of the click and half within a day, the rest spread over the
  following weeks (Chapelle, "Modeling delayed feedback in display advertising", KDD 2014, on
  Criteo's data), which one exponential cannot give and a fast and a slow component can.

A delay is the quantile of its distribution at one uniform draw per (request, ad) (keyed:
``sim.world.response``), so the same impression gets the same delay in every arm and world of a
seed, and in two worlds that differ only in the delay's parameters a conversion moves with them
(a heavier tail makes each one later, it does not reshuffle them). The mixture's quantile has no
closed form: it is found by bisection on the log delay (:data:`BISECTIONS` halvings, to float
precision).

The CDF is what a live system knows of the shape: the autobidder discounts the spend of recent
hours by the share of their conversions that can have arrived (``sim.autobidding``), and the
share of a window's conversions still to come at a release is the delayed-feedback bias of its
training labels (``sim.lifecycle``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from sim.config.schema import WorldConfig

BISECTIONS = 56  # halvings of the log-delay bracket in the mixture's quantile


@dataclass(frozen=True, kw_only=True)
class ConversionDelay:
    """A delay distribution: :meth:`quantile` draws, :meth:`cdf` is its distribution function."""

    kind: str
    mean_s: float = 0.0  # exponential
    weights: tuple[float, ...] = ()  # lognormal mixture
    medians_s: tuple[float, ...] = ()
    sigmas: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, w: WorldConfig) -> ConversionDelay:
        if w.conversion_delay == "exponential":
            return cls(kind="exponential", mean_s=w.conversion_delay_mean_s)
        return cls(kind="lognormal", weights=tuple(w.conversion_delay_weights),
                   medians_s=tuple(w.conversion_delay_medians_s),
                   sigmas=tuple(w.conversion_delay_sigmas))

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """The delays (seconds) at uniforms ``u`` in [0, 1) (any shape)."""
        u = np.asarray(u, dtype=np.float64)
        if self.kind == "exponential":
            return -self.mean_s * np.log1p(-u)
        logs = np.log(np.asarray(self.medians_s))
        sig = np.asarray(self.sigmas)
        # every component's quantile brackets the mixture's: between the smallest and largest
        v = np.clip(u, 1e-300, 1.0 - 1e-16)[..., None]
        each = logs + sig * ndtri(v)
        lo, hi = each.min(axis=-1), each.max(axis=-1)
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = self._log_cdf_mix(mid) < u
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return np.exp(0.5 * (lo + hi))

    def _log_cdf_mix(self, log_t: np.ndarray) -> np.ndarray:
        """The mixture's CDF at ``exp(log_t)``."""
        out = np.zeros_like(log_t)
        for wk, mk, sk in zip(self.weights, self.medians_s, self.sigmas, strict=True):
            out = out + wk * ndtr((log_t - np.log(mk)) / sk)
        return out

    def cdf(self, t: np.ndarray | float) -> np.ndarray:
        """The share of conversions that arrive within ``t`` seconds of their click (0 for
        t <= 0)."""
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "exponential":
            if self.mean_s <= 0:
                return np.where(t >= 0, 1.0, 0.0)
            return np.where(t > 0, -np.expm1(-np.maximum(t, 0.0) / self.mean_s), 0.0)
        return np.where(t > 0, self._log_cdf_mix(np.log(np.maximum(t, 1e-300))), 0.0)

    def mean(self) -> float:
        """The mean delay (seconds)."""
        if self.kind == "exponential":
            return self.mean_s
        return float(sum(w * m * np.exp(0.5 * s * s)
                         for w, m, s in zip(self.weights, self.medians_s, self.sigmas, strict=True)))
