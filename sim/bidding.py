"""Bids from each advertiser's objective, in the units the auction ranks and charges.

=========  =======================================  ============  ==========
objective  bid per unit                             quality       charged on
=========  =======================================  ============  ==========
``ocpm``   target CPA x pCTR x pCVR x multiplier    1             impression
``cpc``    max CPC x multiplier                     pCTR          click
``cpm``    price / 1000 x multiplier                1             impression
=========  =======================================  ============  ==========

So ``bid x quality`` is always the expected currency per impression (eCPM / 1000) and the
auction compares like with like. The multiplier is the advertiser's bid multiplier
(:func:`actuators`: its pacing multiplier, for an autobid oCPM campaign the smaller of that and
its CPA multiplier, which may exceed 1); ``bidding.bid_scale`` multiplies every bid (a bidder
that bids more or less than value).

**Two actuators of one pacing controller** (:mod:`sim.pacing`). A bid that scales with a
multiplier (oCPM, CPC) is paced by it: a lower multiplier wins fewer and cheaper auctions. A
fixed-price (CPM) bid cannot be paced finely that way: it wins every auction whose competition it
clears, so its spend is a cliff in the multiplier. With ``pacing.throttle_fixed_price`` (the
default) a CPM advertiser bids its full price and the controller's output is instead its
*participation rate*: it takes part in each request with that probability (a keyed draw per
request and advertiser, so compared worlds agree), and its spend is linear in the rate, as
budget throttling on real platforms does (Agarwal et al. 2014, "Budget pacing for targeted online
advertisements at LinkedIn"; Xu et al. 2015, "Smart pacing for effective online ad campaign
optimization").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.rng import PARTICIPATION, keyed_uniform
from sim.world.catalog import CPC, CPM, OCPM, Advertisers


def actuators(objective: np.ndarray, multiplier: np.ndarray, throttle_fixed_price: bool,
              cpa_multiplier: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each (A,) advertiser's bid multiplier and participation rate from the pacing controller's
    output ``multiplier``: a fixed-price (cpm) advertiser that is throttled bids in full and takes
    part with probability ``multiplier``; every other bids ``x multiplier`` and always takes
    part. With the oCPM autobidder on (``cpa_multiplier`` given, :mod:`sim.autobidding`) an oCPM
    advertiser bids ``x min(multiplier, cpa_multiplier)``: the tighter of its budget and its
    CPA constraint."""
    t = throttled(objective, throttle_fixed_price)
    bid = np.where(t, 1.0, multiplier)
    if cpa_multiplier is not None:
        bid = np.where(objective == OCPM, np.minimum(bid, cpa_multiplier), bid)
    return bid, np.where(t, multiplier, 1.0)


def throttled(objective: np.ndarray, throttle_fixed_price: bool) -> np.ndarray:
    """(A,) bool: advertisers paced by participation rather than by their bid."""
    return (objective == CPM) & throttle_fixed_price


def participates(seed: int, request_id: np.ndarray, advertiser: np.ndarray,
                 rate: np.ndarray) -> np.ndarray:
    """(B, K) bool: whether each candidate's advertiser takes part in its request, a keyed draw
    below the advertiser's participation ``rate`` (A,); ``request_id`` (B,), ``advertiser``
    (B, K). All candidates of one advertiser in one request share the draw."""
    r = rate[advertiser]
    out = np.ones(advertiser.shape, bool)
    draw = r < 1.0  # only throttled candidates need a draw; it is keyed, so the same either way
    if draw.any():
        rid = np.broadcast_to(request_id[:, None], advertiser.shape)
        out[draw] = keyed_uniform(seed, rid[draw], advertiser[draw], PARTICIPATION) < r[draw]
    return out


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
