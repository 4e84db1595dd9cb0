"""The pacing controller and the budget ledger.

Each advertiser's daily budget is planned along the day's traffic profile (the share of the day's
expected requests seen so far, :func:`sim.world.traffic.day_share`). Every ``interval_s`` the
controller compares the spend of the last interval with the plan for it, where the plan spreads
the *remaining* budget over the *remaining* traffic (so past errors are caught up smoothly), and
updates the bid multiplier multiplicatively::

    m <- clip(m * (planned / actual) ** gain, min_multiplier, max_multiplier)

An advertiser that cannot spend its plan at full bid stays at ``max_multiplier`` (1: never bids
above value), i.e. is not throttled. Budgets are enforced per tick: an advertiser whose spend has
reached its budget is not eligible until the daily reset, so a budget is exceeded by at most one
tick's spend. That overspend is measured in the ledger and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.schema import PacingConfig

RATIO_CLIP = 2.0  # one update moves the multiplier by at most this factor ** gain


def update_multiplier(
    m: np.ndarray, actual: np.ndarray, planned: np.ndarray, cfg: PacingConfig
) -> np.ndarray:
    """One controller step. ``actual`` and ``planned`` are the interval's spend per advertiser."""
    if not cfg.enabled:
        return np.full_like(m, cfg.max_multiplier)
    ratio = np.clip(planned / np.maximum(actual, 1e-12), 1.0 / RATIO_CLIP, RATIO_CLIP)
    ratio = np.where(planned <= 0, 1.0 / RATIO_CLIP, ratio)
    return np.clip(m * ratio**cfg.gain, cfg.min_multiplier, cfg.max_multiplier)


def planned_spend(budget: np.ndarray, spent: np.ndarray, share_start: float,
                  share_end: float) -> np.ndarray:
    """Plan for an interval: the remaining budget spread over the remaining share of traffic."""
    remaining = np.maximum(budget - spent, 0.0)
    left = max(1.0 - share_start, 1e-9)
    return remaining * (share_end - share_start) / left


@dataclass
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


@dataclass
class Budgets:
    """One set of campaigns: a ledger, pacing multipliers, spend since the last pacing update.

    Under ``budget_split`` each arm has its own; under ``user_split`` both arms share one."""

    name: str
    ledger: Ledger
    multiplier: np.ndarray  # (A,) in (0, 1]
    interval_spent: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.interval_spent = np.zeros_like(self.multiplier)

    def book(self, advertiser: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Charge one tick's costs; return the (A,) tick spend."""
        tick = self.ledger.charge(advertiser, cost)
        self.interval_spent += tick
        return tick
