"""The campaign desk: the budgets of each experiment design, pacing, ramp re-splits, day close.

Processes: ``pacing`` every ``pacing.interval_s`` updates every set of budgets' multipliers for the
interval just ended and, at each day boundary, closes the day (``budget_days`` log) and resets
it; ``ramp`` applies each ramp step at its time, re-splitting ``budget_split`` sub-budgets by the
new traffic shares (spend so far today stays booked where it was) and re-anchoring each arm's
plan at the step (:func:`sim.pacing.planned_spend`); ``campaigns`` logs the campaigns as they
stand at the start of each day (``campaigns`` log; a ramp step within a day logs them again).

**Budget-Split by traffic.** An arm's sub-budget is its share of the *traffic*, not of the users:
the treatment's share is the expected request share of the users assigned to it
(:func:`traffic_shares`; user activity is lognormal, so at a nominal 50% the assigned users may
bring 48% or 53% of the requests), so the budget per request is the same in both arms. The
campaigns log keeps both shares (``nominal_share``, ``traffic_share``).

**How a day starts.** Each advertiser's multiplier carries over from the evening, except for one
that reached its budget at traffic share ``s < 1`` yesterday: it starts the day at its output
``x s``, not below its floor (``pacing.min_multiplier``, or ``min_participation`` for a rate).
For a throttled fixed-price advertiser (:func:`sim.bidding.actuators`) that is exact:
it took part too often by ``1 / s`` and its spend is linear in its participation rate. For a bid
multiplier it is the same correction under a linear spend curve; spend usually rises faster than
the bid (more wins, at higher prices), so the day starts a little low and the plan's catch-up
brings it back, instead of rushing through the morning's budget at yesterday's multiplier.
Measured on day 2 of the default world (with the bounded step of :mod:`sim.pacing`): with the
bid multiplier carried over as it was, the oCPM campaigns' mean gap to the profile was 0.062 and
0.080 at seeds 1 and 4, and 4-9% of the budget-bound oCPM and CPC campaigns reached their budget
before three quarters of the day at each of seeds 1, 2 and 4; with the start at ``m x s``,
every objective's mean gap is at most 0.042 at seeds 0-4 and at most 4.5% reach it early.
With the oCPM autobidder on, only the budget multiplier is lowered: a campaign whose CPA
multiplier binds (its bid is the smaller of the two) keeps its bid unless ``m x s`` falls below
it. The autobidder is off by default, and this is not measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

import numpy as np
import simpy

from sim.autobidding import ConversionBook, unwind, update_cpa_multiplier
from sim.bidding import throttled
from sim.clock import DAY_S, Wait
from sim.config import ConfigError
from sim.config.schema import OBJECTIVES, AutobidConfig, Config
from sim.experiment import arm_shares, assignment_draw, treatment_share
from sim.logs.writer import LogWriter
from sim.pacing import (
    ERROR_CLIP,
    ERROR_CLIP_RATE,
    Budgets,
    Ledger,
    planned_spend,
    update_multiplier,
)
from sim.world.catalog import CPC, CPM, OCPM, Advertisers
from sim.world.delay import ConversionDelay
from sim.world.traffic import day_share
from sim.world.users import Users


def traffic_shares(salt: str, users: Users, share: float, arms: list[str]) -> dict[str, float]:
    """Each arm's expected share of the requests when the treatment holds the users whose
    assignment draw is below ``share``: the summed activity of its users."""
    if len(arms) == 1:
        return {arms[0]: 1.0}
    weight = np.diff(users.activity_cdf, prepend=0.0)  # each user's request share
    treated = float(weight[assignment_draw(salt, np.arange(users.n)) < share].sum())
    return arm_shares(min(treated, 1.0), arms)  # a sum of shares: at most 1 up to rounding


class CampaignDesk:
    """The campaigns of every arm. ``arm_cfgs`` (default: ``cfg`` for every arm) give each arm's
    bidding: under budget-split each arm's sub-campaigns may run the oCPM autobidder or not
    (``bidding.autobid``); under user-split the arms share campaigns, so they must agree."""

    def __init__(self, cfg: Config, adv: Advertisers, users: Users, writer: LogWriter,
                 arm_cfgs: dict[str, Config] | None = None) -> None:
        self.cfg, self.adv, self.users, self.writer = cfg, adv, users, writer
        self.base_budget = adv.daily_budget.copy()
        self.delay = ConversionDelay.from_config(cfg.world)
        arms = list(cfg.experiment.arms)
        arm_cfgs = arm_cfgs or dict.fromkeys(arms, cfg)
        self.autobid = {a: arm_cfgs[a].bidding.autobid for a in arms}
        self.autobid_of: dict[str, AutobidConfig] = {}  # by set of budgets' name
        self.share = treatment_share(0.0, cfg.experiment.ramp) if len(arms) > 1 else 0.0
        # budget-split arms a ramp step has just given traffic for the first time (their
        # budgets were 0): the simulation opens them (sim.opening) when the traffic next comes
        self.funded: list[str] = []
        if cfg.experiment.design == "user_split" or len(arms) == 1:
            differ = sorted({k for ab in self.autobid.values()
                             for k, v in dataclasses.asdict(ab).items()
                             if v != getattr(self.autobid[arms[0]], k)})
            if differ:
                raise ConfigError(f"`experiment.treatment.bidding.autobid.{differ[0]}` must match "
                                  "the control's under user_split: both arms share the campaigns")
            shared = self._budgets("shared" if len(arms) > 1 else "control", 1.0, arms[0])
            self.by_arm = dict.fromkeys(arms, shared)
        else:
            shares = self.traffic_shares()
            self.by_arm = {a: self._budgets(a, shares[a], a) for a in arms}

    def _budgets(self, name: str, share: float, arm: str) -> Budgets:
        ab, pc = self.autobid[arm], self.cfg.pacing
        self.autobid_of[name] = ab
        book = (ConversionBook(n_advertisers=self.adv.n, interval_s=pc.interval_s,
                               n=max(1, int(np.ceil(ab.window_s / pc.interval_s))))
                if ab.enabled else None)
        return Budgets(name=name, ledger=Ledger(budget=self.base_budget * share),
                       multiplier=np.full(self.adv.n, pc.max_multiplier), conversions=book)

    @property
    def rates(self) -> np.ndarray:
        """(A,) which advertisers' pacing output is a participation rate (throttled fixed-price
        bidders, :func:`sim.bidding.throttled`) rather than a bid multiplier."""
        return throttled(self.adv.objective, self.cfg.pacing.throttle_fixed_price)

    @property
    def floor(self) -> np.ndarray:
        """(A,) the pacing output's floor: a throttled advertiser's participation may fall to
        ``min_participation``, a bid multiplier to ``min_multiplier``."""
        pc = self.cfg.pacing
        return np.where(self.rates, pc.min_participation, pc.min_multiplier)

    @property
    def error_clip(self) -> np.ndarray:
        """(A,) the bound of each advertiser's pacing error (:func:`sim.pacing.update_multiplier`):
        wide for a participation rate, narrow for a bid multiplier."""
        return np.where(self.rates, ERROR_CLIP_RATE, ERROR_CLIP)

    def ceiling(self, b: Budgets) -> np.ndarray:
        """(A,) the pacing multiplier's ceiling: an autobid oCPM campaign's is the autobidder's
        cap (so that its CPA constraint, not the budget's, can bind above 1)."""
        top = self.cfg.pacing.max_multiplier
        if b.conversions is None:
            return np.full(self.adv.n, top)
        return np.where(self.adv.objective == OCPM, self.autobid_of[b.name].max_multiplier, top)

    def traffic_shares(self) -> dict[str, float]:
        """Each arm's share of the traffic at the current treatment share."""
        return traffic_shares(self.cfg.experiment.salt, self.users, self.share,
                              list(self.cfg.experiment.arms))

    @property
    def budgets(self) -> list[Budgets]:
        """Each distinct set of budgets once."""
        out: dict[int, Budgets] = {}
        for b in self.by_arm.values():
            out.setdefault(id(b), b)
        return list(out.values())

    def resplit(self, share: float, now: float) -> None:
        """Apply a new treatment share at time ``now``. Under budget-split, what is left of each
        campaign's budget today is re-split by the new traffic shares: each sub-budget becomes its
        spend so far plus its share of the remainder, so sub-budgets still sum to the campaign
        budget and none falls below what it has spent, and each arm's plan is re-anchored at the
        step (its spend and the day's traffic share then). From the next day on, sub-budgets are
        the traffic shares of the budget. An arm whose share was 0 is listed in ``funded``."""
        split = self.cfg.experiment.design == "budget_split" and len(self.by_arm) > 1
        before = self.traffic_shares() if split else {}
        self.share = share
        if split:
            self.funded += [a for a, s in self.traffic_shares().items() if s > 0 and before[a] == 0]
            spent = sum(b.ledger.spent_today for b in self.by_arm.values())
            remaining = np.maximum(self.base_budget - spent, 0.0)
            at = 0.0 if now % DAY_S == 0 else day_share(now, self.cfg.traffic)
            for arm, s in self.traffic_shares().items():
                b = self.by_arm[arm]
                b.ledger.budget[:] = np.minimum(b.ledger.spent_today, self.base_budget) + remaining * s
                b.capped_share[b.ledger.spent_today < b.ledger.budget] = 1.0  # budget left again
                if at > 0:
                    b.anchor(at)

    def log_campaigns(self, now: float) -> None:
        """One ``campaigns`` row per set of budgets and advertiser, as they stand at ``now``."""
        adv, obj = self.adv, self.adv.objective
        nominal = arm_shares(self.share, list(self.cfg.experiment.arms))
        traffic = self.traffic_shares()
        for b in self.budgets:
            self.writer.append("campaigns", {
                "nominal_share": nominal.get(b.name, 1.0), "traffic_share": traffic.get(b.name, 1.0),
                "time": now, "day": int(now // DAY_S), "arm": b.name,
                "advertiser_id": np.arange(adv.n), "objective": np.asarray(OBJECTIVES)[obj],
                "target_cpa": np.where(obj == OCPM, adv.target_cpa, np.nan),
                "max_cpc": np.where(obj == CPC, adv.max_cpc, np.nan),
                "cpm_price": np.where(obj == CPM, adv.cpm_price, np.nan),
                "budget": b.ledger.budget.copy()})

    def close_day(self, day: int) -> None:
        for b in self.budgets:
            closed = b.ledger.close_day()
            self.writer.append("budget_days", {
                "day": day, "arm": b.name, "advertiser_id": np.arange(self.adv.n),
                "objective": np.asarray(OBJECTIVES)[self.adv.objective],
                "budget": b.ledger.budget.copy(), "spend": closed["spend"],
                "billed": closed["billed"], "overspend": closed["overspend"],
                "max_tick_spend": closed["max_tick_spend"]})
        if self.cfg.experiment.design == "budget_split" and len(self.by_arm) > 1:
            for arm, s in self.traffic_shares().items():
                self.by_arm[arm].ledger.budget[:] = self.base_budget * s
        for b in self.budgets:  # an advertiser that capped early starts lower
            if self.cfg.pacing.enabled:  # (disabled pacing bids at the ceiling every interval)
                lower = b.capped_share < 1.0  # capped, with a budget, and not re-opened
                b.multiplier[lower] = np.maximum(b.multiplier[lower] * b.capped_share[lower],
                                                 self.floor[lower])
            b.new_day()

    # -- processes -------------------------------------------------------------------------

    def pacing(self, env: simpy.Environment, wait: Wait) -> Generator[simpy.Event, None, None]:
        dt = self.cfg.pacing.interval_s
        while True:
            start = env.now
            yield wait("pacing", dt)
            now = env.now
            s0 = day_share(start, self.cfg.traffic)
            s1 = 1.0 if now % DAY_S == 0 else day_share(now, self.cfg.traffic)
            for b in self.budgets:
                led = b.ledger
                plan = planned_spend(led.budget, led.spent_today - b.interval_spent, s0, s1,
                                     b.anchor_share, b.anchor_spent)
                new_m = update_multiplier(b.multiplier, b.interval_spent, plan, led.budget,
                                          b.interval_auctions, self.cfg.pacing, self.ceiling(b),
                                          self.floor, self.error_clip)
                cpa = self._autobid(b, now, new_m)
                capped_now = ((led.budget > 0) & (led.spent_today >= led.budget)
                              & (b.capped_share >= 1.0))
                b.capped_share[capped_now] = s1
                self.writer.append("pacing", {
                    "time": now, "day": int((now - 1e-9) // DAY_S), "day_share": s1, "arm": b.name,
                    "advertiser_id": np.arange(self.adv.n), "multiplier": new_m, "planned": plan,
                    "actual": b.interval_spent.copy(),
                    "auctions": b.interval_auctions.copy(), **cpa, "spent_today": led.spent_today.copy(),
                    "budget": led.budget.copy()})
                b.multiplier[:] = new_m  # in place: arms sharing these budgets see it
                b.interval_spent[:] = 0.0
                b.interval_auctions[:] = 0.0
            if now % DAY_S == 0:
                self.close_day(int(now // DAY_S) - 1)

    def _autobid(self, b: Budgets, now: float, new_m: np.ndarray) -> dict[str, np.ndarray]:
        """The autobidder's step for ``b``'s oCPM campaigns at the end of an interval (with the
        pacing step ``new_m``, unwound in place: :func:`sim.autobidding.unwind`), and its log
        columns (NaN where it does not run)."""
        nan = np.full(self.adv.n, np.nan)
        if b.conversions is None:
            return {"cpa_multiplier": nan, "matured_spend": nan, "observed_conversions": nan}
        ab, w = self.autobid_of[b.name], self.cfg.world
        matured, observed = b.conversions.evidence(now, self.delay, w.attribution_window_s)
        ocpm = self.adv.objective == OCPM
        new = update_cpa_multiplier(b.cpa_multiplier, matured, observed, self.adv.target_cpa,
                                    ab, self.cfg.pacing.min_multiplier)
        new_m[ocpm], b.cpa_multiplier[ocpm] = unwind(new_m[ocpm], new[ocpm])
        b.conversions.advance(now)
        return {"cpa_multiplier": np.where(ocpm, b.cpa_multiplier, np.nan),
                "matured_spend": np.where(ocpm, matured, np.nan),
                "observed_conversions": np.where(ocpm, observed, np.nan)}

    def ramp(self, env: simpy.Environment, wait: Wait) -> Generator[simpy.Event, None, None]:
        if len(self.by_arm) == 1:
            return
        for step in self.cfg.experiment.ramp:
            delay = step.day * DAY_S - env.now
            if delay < 0:
                continue
            yield wait("ramp", delay)
            self.resplit(step.share, env.now)
            if env.now % DAY_S:  # within a day; a day's start is logged by ``campaigns``
                self.log_campaigns(env.now)

    def campaigns(self, env: simpy.Environment, wait: Wait,
                  horizon: float) -> Generator[simpy.Event, None, None]:
        """Log the campaigns at the start of every day before ``horizon`` (after a ramp step and
        the budget reset of the same instant)."""
        while env.now < horizon:
            self.log_campaigns(env.now)
            yield wait("campaigns", DAY_S)
