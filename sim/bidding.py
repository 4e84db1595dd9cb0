"""Bids from each advertiser's objective, in the units the auction ranks and charges.

=========  =======================================  ============  ==========
objective  bid per unit                             quality       charged on
=========  =======================================  ============  ==========
``ocpm``   target CPA x pCTR x pCVR x multiplier    1             impression
``cpc``    max CPC x multiplier                     pCTR          click
``cpm``    price / 1000 x multiplier                1             impression
=========  =======================================  ============  ==========

So ``bid x quality`` is always the expected currency per impression (eCPM / 1000) and the
auction compares like with like. The multiplier is the advertiser's pacing multiplier in (0, 1];
``bidding.bid_scale`` multiplies every bid (an autobidder that bids more or less than value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.world.catalog import CPC, OCPM, Advertisers


@dataclass(frozen=True, kw_only=True)
class Bids:
    """Bids of a (requests x candidates) array of candidates."""

    bid: np.ndarray  # float64 bid per unit of quality, currency
    quality: np.ndarray  # float64 units per impression (pCTR for cpc, else 1)
    per_click: np.ndarray  # bool, charged per click (cpc) rather than per impression


def make_bids(
    adv: Advertisers, advertiser: np.ndarray, pctr: np.ndarray, pcvr: np.ndarray,
    multiplier: np.ndarray, scale: float = 1.0,
) -> Bids:
    """Bids for candidates of advertisers ``advertiser`` (any shape) given estimated rates.

    ``multiplier`` is indexed by advertiser; ``pctr`` and ``pcvr`` have the candidates' shape;
    ``scale`` (``bidding.bid_scale``) multiplies every bid.
    """
    obj = adv.objective[advertiser]
    # per advertiser: the target CPA (ocpm), the max CPC (cpc) or the price per impression (cpm)
    base = np.where(adv.objective == OCPM, adv.target_cpa,
                    np.where(adv.objective == CPC, adv.max_cpc, adv.cpm_price / 1000.0))[advertiser]
    is_ocpm = obj == OCPM
    raw = np.where(is_ocpm, base * pctr * pcvr, base)
    bid = raw * multiplier[advertiser] * scale
    per_click = obj == CPC
    quality = np.where(per_click, pctr, 1.0)
    return Bids(bid=bid.astype(np.float64, copy=False), quality=quality.astype(np.float64, copy=False),
                per_click=per_click)


def expected_value(adv: Advertisers, advertiser: np.ndarray, pctr: np.ndarray,
                   pcvr: np.ndarray, multiplier: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Expected currency per impression (``bid x quality``), the utility stages rank by."""
    b = make_bids(adv, advertiser, pctr, pcvr, multiplier, scale)
    return b.bid * b.quality
