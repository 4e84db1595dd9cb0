"""The true response: pCTR and pCVR as functions of user and ad latent state, and the draws.

True rates (no model ever sees these; they are logged beside every estimate)::

    logit pCTR = base_ctr + ctr_shift[surface] + ctr_affinity * <u, v>/sqrt(d) + creative
    logit pCVR = base_cvr + cvr_shift[surface] + cvr_affinity * <u * w, v>/sqrt(d) + quality

with ``w`` a fixed per-dimension weighting (conversion intent differs from click intent). The
position effect multiplies pCTR by ``position_ctr[slot]``. pCVR is the probability of a
conversion given a click. Draws are keyed by ``(seed, request_id, ad_id, event)``
(:func:`sim.rng.keyed_uniform`), so two worlds agree on the outcome of the same impression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config.schema import WorldConfig
from sim.numerics import sigmoid
from sim.rng import CLICK, CONVERSION, CONVERSION_DELAY, keyed_uniform
from sim.world.delay import ConversionDelay


@dataclass(frozen=True, kw_only=True)
class Truth:
    """World constants of the response model."""

    base_ctr: float
    base_cvr: float
    ctr_shift: np.ndarray  # (n_surfaces,)
    cvr_shift: np.ndarray  # (n_surfaces,)
    ctr_affinity: float
    cvr_affinity: float
    cvr_weight: np.ndarray  # (d,)
    position_ctr: np.ndarray  # (n_positions,)


def build_truth(cfg: WorldConfig, rng: np.random.Generator) -> Truth:
    return Truth(
        base_ctr=cfg.base_ctr_logit, base_cvr=cfg.base_cvr_logit,
        ctr_shift=np.asarray(cfg.surface_ctr_shift, dtype=np.float64),
        cvr_shift=np.asarray(cfg.surface_cvr_shift, dtype=np.float64),
        ctr_affinity=cfg.ctr_affinity, cvr_affinity=cfg.cvr_affinity,
        cvr_weight=rng.uniform(0.0, 2.0, size=cfg.latent_dim),
        position_ctr=np.asarray(cfg.position_ctr, dtype=np.float64),
    )


def true_rates(
    truth: Truth, user_latent: np.ndarray, surface: np.ndarray, ad_latent: np.ndarray,
    creative: np.ndarray, quality: np.ndarray,
    user_shift: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """True (pCTR at the top position, pCVR) for every (request, candidate) pair.

    Shapes: ``user_latent`` (B, d), ``surface`` (B,), ``ad_latent`` (B, K, d), ``creative`` and
    ``quality`` (B, K); ``user_shift``, each request's user's (pCTR, pCVR) logit shifts, (B,)
    each (bots: :meth:`sim.world.users.Users.logit_shifts`). Returns two (B, K) float64 arrays
    of probabilities.
    """
    scale = 1.0 / np.sqrt(user_latent.shape[1])
    u = user_latent[:, None, :].astype(np.float64)
    ctr_aff = np.einsum("bkd,bkd->bk", np.broadcast_to(u, ad_latent.shape), ad_latent) * scale
    cvr_aff = np.einsum("bkd,bkd->bk", np.broadcast_to(u * truth.cvr_weight, ad_latent.shape),
                        ad_latent) * scale
    ctr = truth.base_ctr + truth.ctr_shift[surface][:, None] + truth.ctr_affinity * ctr_aff
    cvr = truth.base_cvr + truth.cvr_shift[surface][:, None] + truth.cvr_affinity * cvr_aff
    if user_shift is not None:
        ctr = ctr + user_shift[0][:, None]
        cvr = cvr + user_shift[1][:, None]
    return sigmoid(ctr + creative), sigmoid(cvr + quality)


@dataclass(frozen=True, kw_only=True)
class Outcomes:
    """Drawn outcomes of impressions; every array has the shape of the impressions given."""

    click: np.ndarray  # bool
    conversion: np.ndarray  # bool (only ever true where click is true)
    delay_s: np.ndarray  # float64 seconds from click to conversion (inf where none)


def draw_outcomes(
    seed: int, request_id: np.ndarray, ad_id: np.ndarray, pctr: np.ndarray, pcvr: np.ndarray,
    delay: ConversionDelay,
) -> Outcomes:
    """Clicks with probability ``pctr``, conversions given a click with ``pcvr``, and each
    conversion's delay drawn from ``delay`` (``sim.world.delay``; keyed, so a conversion's delay
    is the same whichever impressions are drawn beside it). Only conversions are given a delay:
    a lognormal mixture's quantile is a bisection, most of a batch's outcome cost when it was
    drawn for every impression."""
    click = keyed_uniform(seed, request_id, ad_id, CLICK) < pctr
    conversion = click & (keyed_uniform(seed, request_id, ad_id, CONVERSION) < pcvr)
    delay_s = np.full(conversion.shape, np.inf)
    if conversion.any():
        rid = np.broadcast_to(request_id, conversion.shape)
        aid = np.broadcast_to(ad_id, conversion.shape)
        delay_s[conversion] = delay.quantile(
            keyed_uniform(seed, rid[conversion], aid[conversion], CONVERSION_DELAY))
    return Outcomes(click=click, conversion=conversion, delay_s=delay_s)
