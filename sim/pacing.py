"""The pacing controller and the budget ledger.

**The plan.** Each advertiser's daily budget is planned along the day's traffic profile (the share
of the day's expected requests seen so far, :func:`sim.world.traffic.day_share`). The plan for an
interval spreads the *remaining* budget over the *remaining* traffic, so a deficit is caught up
smoothly, and is capped by the profile, so a lead is waited out (:func:`planned_spend`).

**The controller** is dual descent on the budget constraint (Balseiro & Gur 2019, "Learning in
repeated auctions with budgets"), in the log of the bid multiplier. Every ``interval_s``::

    g     = clip((actual - planned) / rho, -c, c)
    log m <- clip(log m - gain * w * g, log min_multiplier, log max_multiplier)

with ``c`` = ``ERROR_CLIP`` for a bid multiplier and ``ERROR_CLIP_RATE`` for a throttled
advertiser's participation rate (below), and ``w`` the volume weight of :func:`step_weight`.

where ``rho = budget x interval_s / 86400`` is the budget of an interval at flat traffic: the
error is measured in a fixed unit of each advertiser's own budget, so a small interval at night
(a few impressions) does not swing the multiplier the way a ratio ``planned / actual`` does, and
the step is linear in the error, so the noise of an interval's spend averages out instead of
biasing the multiplier. At a fixed point the expected spend equals the plan: in a stationary
market the controller reaches the multiplier that spends the budget exactly (the closed form is
tested: value 1 per round, one competing bid ~ U[0, 1], second price, budget 0.125 per round ->
multiplier 0.5, win rate 0.5). An advertiser that cannot spend its plan at full bid drifts up to
``max_multiplier`` (1: never bids above value) and stays there, i.e. is not throttled.

**The step is bounded** (``ERROR_CLIP``: at most ``gain x 0.5`` in ``log m`` per interval, a
factor 1.28 at the default gain 0.5): spend is not smooth in the multiplier. A bid reaches the auction
only when it clears the funnel's cuts (L1 and L2 keep the top eCPMs), so a campaign whose
budget is small against what it could win bids on the edge of a cliff: measured in the default
world, a CPC campaign won nothing at ``m`` 0.58 and a third of its daily budget in one tick at
0.89. With steps of up to a factor 2.7 (a bound of 1.0) such campaigns alternated between no
auction and bursts: on day 2 of the default world, 11-13% of the budget-bound CPC campaigns
reached their budget before three quarters of the day at seeds 1, 2 and 4 (with the start of
day below). With the bound at 0.25, none did at seeds 0-4. A
throttled advertiser's participation rate keeps the wide bound (``ERROR_CLIP_RATE``): its
expected spend is linear in the rate, with no cliff to jump, and the rate may have to travel
four decades (a fixed price far above the market on a small budget).

**How a day starts.** The multiplier carries over from the end of yesterday (the market of this
morning is yesterday's market). The first day has no yesterday: by default
(``pacing.opening=ceiling``) it starts at ``max_multiplier`` and the first intervals bring it
down (a burst in the first hours for an advertiser far above the clearing price, then a wait for
the traffic to catch up); with ``pacing.opening=forecast`` it starts where a forecast of its
delivery puts it (:mod:`sim.opening`: this controller run on a sample of the first day's
requests through the funnel as the traffic starts). **A capped advertiser** (its spend reached
its budget) is not eligible until the daily reset; it then has no plan and no spend, so its
error is 0 and its multiplier holds: it does not decay towards the floor overnight and start the
next morning starved. But what it holds is close to the multiplier that spent its budget by
traffic share ``s < 1`` (one step below it: the update that saw the cap), too high by the
evening's measure, so the desk starts its day at ``max(m x s, floor)`` (:mod:`sim.campaigns`),
when pacing is enabled.

Budgets are enforced per tick: an advertiser whose spend has reached its budget is not eligible
until the daily reset, so a budget is exceeded by at most one tick's spend. That overspend is
measured in the ledger and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.autobidding import ConversionBook
from sim.clock import DAY_S
from sim.config.schema import PacingConfig

ERROR_CLIP = 0.5  # a bid multiplier moves by at most gain x this in log per update (0.25)
ERROR_CLIP_RATE = 2.0  # a participation rate (spend linear in it, no cliff): 1.0


def update_multiplier(
    m: np.ndarray, actual: np.ndarray, planned: np.ndarray, budget: np.ndarray,
    auctions: np.ndarray, cfg: PacingConfig, upper: np.ndarray | float | None = None,
    lower: np.ndarray | float | None = None, error_clip: np.ndarray | float = ERROR_CLIP,
) -> np.ndarray:
    """One controller step for (A,) advertisers: ``actual`` and ``planned`` are the interval's
    spend and plan, ``budget`` today's budget (currency), ``auctions`` how many auctions each
    advertiser took part in during the interval (its step's weight, :func:`step_weight`).
    ``upper``: each advertiser's ceiling (default ``max_multiplier``; an autobid oCPM campaign's
    is the autobidder's cap, :mod:`sim.autobidding`); ``lower`` their floor (default
    ``min_multiplier``; a throttled advertiser's is ``min_participation``); ``error_clip`` the
    bound of each one's error (``ERROR_CLIP_RATE`` for a throttled advertiser's rate)."""
    top = cfg.max_multiplier if upper is None else upper
    bottom = cfg.min_multiplier if lower is None else lower
    if not cfg.enabled:
        return np.broadcast_to(np.asarray(top, dtype=m.dtype), m.shape).copy()
    rho = np.maximum(budget * cfg.interval_s / DAY_S, 1e-12)
    g = np.clip((actual - planned) / rho, -error_clip, error_clip)
    log_m = np.log(m) - cfg.gain * step_weight(auctions, cfg.auctions_ref) * g
    return np.clip(np.exp(log_m), bottom, top)


def step_weight(auctions: np.ndarray, auctions_ref: float) -> np.ndarray:
    """The share of the full step an advertiser takes after ``auctions`` auctions in an interval:
    ``min(1, sqrt(auctions / auctions_ref))``, and 1 after none.

    An interval's spend is a sum over the auctions the advertiser won, so its relative noise
    grows as ``1 / sqrt(auctions)``; scaling the step by ``sqrt(auctions)`` keeps the noise a
    step puts into ``log m`` the same at any volume, while the pull towards the plan weakens only
    as the square root (a per-auction dual step, Balseiro & Gur 2019, is the linear limit). A
    fixed step at a handful of auctions per interval makes the multiplier jitter, and since spend
    is convex in the multiplier, the same money then buys fewer wins. After no auction at all
    the deficit is not noise: the multiplier is too low to reach an auction (it ranks every
    stage) or there is no traffic, and a full step is taken (a capped advertiser has no plan and
    holds)."""
    n = np.asarray(auctions, dtype=np.float64)
    return np.where(n > 0, np.minimum(1.0, np.sqrt(n / auctions_ref)), 1.0)


def planned_spend(budget: np.ndarray, spent: np.ndarray, share_start: float,
                  share_end: float, anchor_share: float = 0.0,
                  anchor_spent: np.ndarray | None = None) -> np.ndarray:
    """Plan for the interval ``[share_start, share_end)`` of the day's traffic, given ``spent``
    at its start: the remaining budget spread over the remaining traffic, but never more than
    what brings the spend back to the profile, at least 0.

    The profile is the spend the day's traffic share calls for: ``budget x share`` from
    midnight, or, after the budget changed within the day (a ramp step re-splits a budget-split
    campaign at traffic share ``anchor_share``, having spent ``anchor_spent``), the line from
    ``(anchor_share, anchor_spent)`` to ``(1, budget)``: what is left of the new budget spread
    along the rest of the day's traffic. Without the anchor a sub-budget that grows mid-day
    would look behind since midnight and one that shrinks far ahead (plan 0 for hours).

    Behind the profile, the deficit is caught up gradually over the rest of the day (spending it
    at once would be the rush this controller exists to prevent). Ahead of it, the plan is what
    is left of the interval's share after the lead, 0 while the lead lasts: an advertiser that
    spent ahead waits for the traffic to catch up instead of being pushed back to its rate (a
    lumpy spender would otherwise be sent over its rate again while still ahead)."""
    remaining = np.maximum(budget - spent, 0.0)
    left = max(1.0 - share_start, 1e-9)
    spread = remaining * (share_end - share_start) / left
    a0 = np.zeros_like(budget) if anchor_spent is None else anchor_spent
    frac = (share_end - anchor_share) / max(1.0 - anchor_share, 1e-9)
    profile = a0 + (budget - a0) * frac
    return np.minimum(spread, np.maximum(profile - spent, 0.0))


@dataclass(kw_only=True)
class Ledger:
    """Spend per advertiser: today, per tick, and the record of closed days."""

    budget: np.ndarray  # (A,) daily budget, currency
    spent_today: np.ndarray = field(init=False)
    max_tick_today: np.ndarray = field(init=False)  # largest single-tick spend today
    tick_spend: np.ndarray = field(init=False)  # spend of the tick being served
    closed_days: list[dict[str, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spent_today = np.zeros_like(self.budget)
        self.max_tick_today = np.zeros_like(self.budget)
        self.tick_spend = np.zeros_like(self.budget)

    def eligible(self) -> np.ndarray:
        """(A,) bool: advertisers with budget left today."""
        return self.spent_today < self.budget

    def charge(self, advertiser: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Book costs of the current tick (several calls when several arms share these budgets);
        return the (A,) spend of this call. :meth:`end_tick` closes the tick."""
        spend = np.bincount(advertiser, weights=cost, minlength=self.budget.shape[0])
        self.spent_today += spend
        self.tick_spend += spend
        return spend

    def end_tick(self) -> None:
        """Record the tick's spend as a candidate for the day's largest tick, and reset it."""
        np.maximum(self.max_tick_today, self.tick_spend, out=self.max_tick_today)
        self.tick_spend[:] = 0.0

    def close_day(self) -> dict[str, np.ndarray]:
        """End the day: record spend, billed amount and overspend, then reset."""
        self.end_tick()
        day = {
            "spend": self.spent_today.copy(),
            "billed": np.minimum(self.spent_today, self.budget),
            "overspend": np.maximum(self.spent_today - self.budget, 0.0),
            "max_tick_spend": self.max_tick_today.copy(),
        }
        self.closed_days.append(day)
        self.spent_today[:] = 0.0
        self.max_tick_today[:] = 0.0
        return day


@dataclass(kw_only=True)
class Budgets:
    """One set of campaigns: a ledger, pacing multipliers, what happened since the last pacing
    update, where today's plan is anchored, and the autobidder's state.

    Under ``budget_split`` each arm has its own; under ``user_split`` both arms share one."""

    name: str
    ledger: Ledger
    # (A,) a bid multiplier in (0, 1] (up to the autobidder's cap for an autobid oCPM campaign),
    # or a throttled cpm advertiser's participation rate
    multiplier: np.ndarray
    # the oCPM autobidder's CPA multipliers and what it watches (sim.autobidding), when it is on
    conversions: ConversionBook | None = None
    cpa_multiplier: np.ndarray = field(init=False)
    interval_spent: np.ndarray = field(init=False)
    interval_auctions: np.ndarray = field(init=False)  # (A,) auctions taken part in
    anchor_share: float = field(init=False, default=0.0)  # the day's plan starts here ...
    anchor_spent: np.ndarray = field(init=False)  # ... from this spend (see planned_spend)
    capped_share: np.ndarray = field(init=False)  # (A,) traffic share when capped today, or 1

    def __post_init__(self) -> None:
        self.interval_spent = np.zeros_like(self.multiplier)
        self.interval_auctions = np.zeros_like(self.multiplier)
        self.anchor_spent = np.zeros_like(self.multiplier)
        self.capped_share = np.ones_like(self.multiplier)
        self.cpa_multiplier = np.ones_like(self.multiplier)

    def book(self, advertiser: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Charge one tick's costs; return the (A,) tick spend."""
        tick = self.ledger.charge(advertiser, cost)
        self.interval_spent += tick
        return tick

    def saw(self, advertiser: np.ndarray) -> None:
        """Count one auction for each advertiser id in ``advertiser`` (one per auction entered)."""
        self.interval_auctions += np.bincount(advertiser, minlength=self.multiplier.shape[0])

    def anchor(self, share: float) -> None:
        """Re-anchor today's plan at traffic share ``share`` (the budget just changed)."""
        self.anchor_share = share
        self.anchor_spent = self.ledger.spent_today.copy()

    def new_day(self) -> None:
        """Plans start again from midnight."""
        self.anchor_share = 0.0
        self.anchor_spent[:] = 0.0
        self.capped_share[:] = 1.0
