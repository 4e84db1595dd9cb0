"""The oCPM autobidder: a controller that holds each conversion-optimised campaign's CPA at its
target, beside the budget pacing of :mod:`sim.pacing`.

On real platforms a campaign with a target CPA is not bid at ``target x pCVR`` and left alone: an
autobidder watches what the campaign actually pays per conversion and moves its bid to hold the
target (target-CPA or cost-cap bidding), bidding above ``target x pCVR`` while it is under target
and below it while it is over, and a budget that binds first caps it (the tighter constraint
wins). Here that is a second multiplier per oCPM advertiser, ``m_cpa``, and the oCPM bid
multiplier is ``min(m_budget, m_cpa)`` (:func:`sim.bidding.actuators`), both allowed up to
``bidding.autobid.max_multiplier`` (1.5 by default, the cap AuctionNet's baselines reach), the one
that does not bind kept within ``LEAD`` of the one that does (:func:`unwind`).

**The controller** is dual descent on the return-on-spend constraint ``spend <= target x
conversions`` (the dual view of Balseiro, Lu & Mirrokni 2020, "Dual mirror descent for online
allocation problems"; AuctionNet's PID baseline, Su et al. 2024, does the same with a PID).
Every pacing interval, over the last ``window_s`` of the campaign's oCPM spend::

    expected = matured_spend / target    # conversions that spend should have bought by now
    g        = clip(1 - observed / expected, -2, 1)
    log m   -= gain x min(1, sqrt(expected / conversions_ref)) x g

**Late conversions are estimated, not ignored.** A conversion arrives a delay after its click
(drawn from ``world.conversion_delay``: :mod:`sim.world.delay`) and counts if within
``world.attribution_window_s``;
spend from an hour ago has had time for only part of its conversions. ``matured_spend`` weighs
each interval's spend by the share of its eventual attributed conversions that should have arrived
by now (:func:`matured_share`), and ``observed`` counts the conversions that have arrived. Ignoring
the delay would make every campaign look over target and push bids down; the error is linear in
the counts, so at the target it is zero in expectation (a ratio ``CPA / target`` would not be).
The step shrinks with the evidence, as the pacing step does with the auctions seen: a campaign
whose matured spend would buy a handful of conversions moves little on a lucky or unlucky day.

With calibrated pCVR and a second-price auction a campaign usually pays less than its value, so
the controller *raises* bids until the CPA reaches the target (or the budget binds); with a pCVR
that over-predicts, it lowers them: it hides a miscalibrated model from a CPA read-out, and
moves what the campaign buys instead (lesson ``scenarios/autobidding.md``).

**Off by default, for now** (``bidding.autobid.enabled``). Measured in the autobidding lesson's
worlds at seeds 0-4: on, a calibrated arm's CPA is 12-22% lower and its conversions 1.6-13.8%
higher at every seed, so it is what a realistic market should run; but every other lesson's world
and figures were measured with oCPM bids at value, and switching the default changes what each of
them reads (in the lesson, the CPA lift of an over-predicting treatment falls from +14.1% to
+1.8% median, significant at none of five seeds, and the mix-shift verdict disappears). The
default moves with the re-measurement of those lessons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.schema import AutobidConfig
from sim.world.delay import ConversionDelay

ERROR_FLOOR = -2.0  # g >= this: observed at most 3x the expected conversions moves as 3x
LEAD = 1.25  # the multiplier that does not bind stays within this factor of the one that does


def matured_share(age_s: np.ndarray, delay: ConversionDelay, window_s: float) -> np.ndarray:
    """The share of an impression's eventual attributed conversions that have arrived ``age_s``
    seconds after it: ``F(min(age, window)) / F(window)`` for the delay CDF ``F`` (1 for an
    exponential of zero mean, 0 before the impression)."""
    raw = np.asarray(age_s, dtype=np.float64)
    age = np.clip(raw, 0.0, window_s)
    full = float(delay.cdf(window_s))
    if full <= 0:  # a zero attribution window: nothing is ever attributed
        return np.zeros_like(age)
    return np.where(raw >= 0, delay.cdf(age) / full, 0.0)


def unwind(m_budget: np.ndarray, m_cpa: np.ndarray,
           lead: float = LEAD) -> tuple[np.ndarray, np.ndarray]:
    """Anti-windup of the two controllers of an autobid campaign, whose bid multiplier is
    ``min(m_budget, m_cpa)``: the one that does not bind would otherwise keep integrating an
    error it cannot act on (pacing sees an underspend while the CPA binds, the CPA controller an
    under-target CPA while the budget binds) and climb to the cap, so that when the binding
    constraint changes, the other reacts only after drifting all the way down. Each is kept within
    ``lead`` times the bid multiplier (clamping, the usual anti-windup of a saturated integrator)."""
    bid = np.minimum(m_budget, m_cpa)
    return np.minimum(m_budget, bid * lead), np.minimum(m_cpa, bid * lead)


def update_cpa_multiplier(m: np.ndarray, matured_spend: np.ndarray, observed: np.ndarray,
                          target: np.ndarray, cfg: AutobidConfig,
                          min_multiplier: float) -> np.ndarray:
    """One controller step for (A,) advertisers (see the module docstring). A campaign with no
    matured spend in the window meets its CPA constraint trivially: it relaxes by a full step
    (``g = -1``), since a CPA multiplier that held would keep a campaign whose bids fell too low
    to win from ever winning again (no spend, no evidence, no move)."""
    expected = matured_spend / target
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(expected > 0, np.clip(1.0 - observed / expected, ERROR_FLOOR, 1.0), -1.0)
    weight = np.where(expected > 0,
                      np.minimum(1.0, np.sqrt(np.maximum(expected, 0.0) / cfg.conversions_ref)),
                      1.0)
    log_m = np.log(m) - cfg.gain * weight * g
    return np.clip(np.exp(log_m), min_multiplier, cfg.max_multiplier)


@dataclass(kw_only=True)
class ConversionBook:
    """What the autobidder watches, per advertiser: oCPM spend per pacing interval over the last
    ``n`` intervals (a ring), and the attributed conversions of that spend with the time each
    happens. Memory is bounded by the window, not by the run."""

    n_advertisers: int
    interval_s: float
    n: int  # intervals in the window: ceil(window_s / interval_s), so at least window_s
    spend: np.ndarray = field(init=False)  # (n, A) ring of interval spend
    start: np.ndarray = field(init=False)  # (n,) start time of each ring slot, NaN if unused
    conversions: list[tuple[np.ndarray, np.ndarray]] = field(init=False)  # per slot: (adv, time)
    current: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.spend = np.zeros((self.n, self.n_advertisers))
        self.start = np.full(self.n, np.nan)
        self.start[0] = 0.0
        empty = (np.zeros(0, np.int64), np.zeros(0))
        self.conversions = [empty] * self.n

    def record(self, advertiser: np.ndarray, cost: np.ndarray, conv_advertiser: np.ndarray,
               conv_time: np.ndarray) -> None:
        """Book oCPM impressions' costs and their attributed conversions (advertiser and the time
        each conversion happens, possibly in the future) to the current interval."""
        self.spend[self.current] += np.bincount(advertiser, weights=cost,
                                                minlength=self.n_advertisers)
        if conv_advertiser.size:
            a, t = self.conversions[self.current]
            self.conversions[self.current] = (np.concatenate([a, conv_advertiser]),
                                              np.concatenate([t, conv_time]))

    def evidence(self, now: float, delay: ConversionDelay,
                 window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(A,) matured spend and (A,) conversions arrived by ``now`` over the window."""
        used = np.isfinite(self.start)
        mid = np.where(used, self.start + self.interval_s / 2, now)
        share = np.where(used, matured_share(now - mid, delay, window_s), 0.0)
        matured = share @ self.spend
        observed = np.zeros(self.n_advertisers)
        for a, t in self.conversions:  # one slot per interval of the window, not per request
            arrived = a[t <= now]
            observed += np.bincount(arrived, minlength=self.n_advertisers)
        return matured, observed

    def advance(self, now: float) -> None:
        """Start a new interval at ``now``, dropping the oldest."""
        self.current = (self.current + 1) % self.n
        self.spend[self.current] = 0.0
        self.start[self.current] = now
        self.conversions[self.current] = (np.zeros(0, np.int64), np.zeros(0))
