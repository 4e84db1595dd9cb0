"""How the market opens: each campaign's pacing multiplier at time 0, from a forecast of the
first day's delivery.

A world's campaigns all start at its first midnight. Later days start from yesterday's
multipliers (:mod:`sim.pacing`), but the first has no yesterday, and starting every campaign at
its ceiling (``pacing.opening=ceiling``) breaks the pacing contract on day 0: an advertiser far
above the clearing price spends many intervals' budget per interval while the controller's
bounded step (a factor 1.28 an interval) brings it down, then waits, its plan 0, until the day's
traffic catches up with its spend. Measured in the Ali-CCP-like feed preset (seeds 110-114), its
largest oCPM advertiser spent 26-56% of its day-0 budget in the first two hours (9.4% of the
day's traffic) and was paced out until hour 8-17; in the default world the budget-bound
advertisers' mean gap between spent share and traffic share was twice the second day's.

Real platforms forecast a campaign's delivery before it runs (a bid landscape from the market's
logs). Here the desk does the same with what it has at time 0 (``pacing.opening=forecast``, the
default): a sample of the first day's requests (``pacing.opening_requests``, drawn from the
traffic model with the day's profile, on the ``opening`` stream, with request ids from
:data:`OPENING_ID_BASE` so that no keyed draw of a live request is reused) is served through
every arm's funnel as it stands at time 0 (the start-up models, the initial index), once per
round, each arm's spend weighted by its traffic share, and after each round the desk's own
controller (:func:`sim.pacing.update_multiplier`) takes one step, with the sample's spend and
the budget's both expressed per pacing interval at the day's mean rate. The same sample every
round: the forecast's spend is a deterministic function of the multipliers, so the search does
not chase noise. The first half of the rounds take the wide error bound (a factor 2.72 a round)
to travel decades, the second half each advertiser's live bound to settle near the cliff a
fixed-price or funnel-cut bidder has.

What the forecast spends is what the platform expects to charge: a per-impression charge as the
auction sets it, a per-click one at the price times the clicks the platform's own models expect
at the slot (L2's pCTR times the slot's CTR belief, ``auction.slot_ctr``), never the world's
true rates. The oCPM autobidder's CPA multiplier is not forecast (no conversion has been seen):
it starts at 1 as before. Nothing is charged, logged as traffic or trained on; each arm's
query-vector cache is restored. The forecast's multipliers and its spend at them are logged
(``opening``) beside the day's realised spend (``budget_days``).

Cost: ``opening_rounds x opening_requests`` requests through each arm's funnel (24,000 at the
defaults, a sixth of a default day's traffic; measured 2.0-2.3 s of a one-arm world).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.campaigns import CampaignDesk
from sim.clock import DAY_S
from sim.config.schema import Config, PacingConfig
from sim.pacing import ERROR_CLIP_RATE, Budgets, update_multiplier
from sim.serving.arm import Arm
from sim.serving.funnel import Impressions, arm_work, serve
from sim.serving.latency import fleet_load
from sim.world.marketplace import Marketplace
from sim.world.traffic import RequestBatch, draw_requests

OPENING_ID_BASE = 1 << 41  # the forecast's request ids (the exploration log's start at 1 << 40)


Part = tuple[Arm, RequestBatch, dict[str, float]]  # an arm, its rows of the sample, its work


@dataclass(frozen=True, kw_only=True)
class Opening:
    """One set of budgets' opening: (A,) ``multiplier`` (what day 0 starts at), and the last
    round's ``forecast_multiplier`` and ``forecast_spend`` (its spend in the sample, per day),
    beside the (A,) ``budget``; ``requests`` in the sample."""

    name: str
    multiplier: np.ndarray
    forecast_multiplier: np.ndarray
    forecast_spend: np.ndarray
    budget: np.ndarray
    requests: int


def forecast_cost(imps: Impressions, slot_ctr: np.ndarray) -> np.ndarray:
    """What the platform expects to charge for each impression: the auction's charge per
    impression, or per click the price times L2's pCTR at the slot (its own belief)."""
    believed = imps.price * imps.l2_pctr * slot_ctr[imps.position]
    return np.where(imps.per_click, believed, imps.cost)


def sample_requests(cfg: Config, market: Marketplace, rng: np.random.Generator) -> RequestBatch:
    """About ``pacing.opening_requests`` requests with the first day's profile (a Poisson count)."""
    traffic = dataclasses.replace(cfg.traffic, requests_per_day=float(cfg.pacing.opening_requests))
    return draw_requests(rng, 0.0, DAY_S, traffic, market.users, market.surface_mix,
                         OPENING_ID_BASE)


def controller_rounds(start: np.ndarray, spend_at: Callable[[np.ndarray], np.ndarray],
                      budget: np.ndarray, cfg: PacingConfig, rounds: int,
                      upper: np.ndarray | float, lower: np.ndarray | float,
                      error_clip: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rounds`` steps of the pacing controller from ``start`` on a deterministic forecast:
    ``spend_at(m)`` is the (A,) spend of one pacing interval at the day's mean rate at
    multipliers ``m``, against ``budget`` (A,) a day. The first half of the rounds take the wide
    error bound (:data:`sim.pacing.ERROR_CLIP_RATE`), the rest ``error_clip``; every step is a full
    one (the spend has no noise to average). An advertiser without a budget keeps its start.
    Returns the final multipliers, and the last round's multipliers and spend."""
    per_interval = budget * cfg.interval_s / DAY_S
    full = np.full(start.shape, cfg.auctions_ref)
    m = start.copy()
    evaluated, spend = m.copy(), np.zeros_like(m)
    for r in range(rounds):
        evaluated, spend = m.copy(), spend_at(m)
        clip = ERROR_CLIP_RATE if r < (rounds + 1) // 2 else error_clip
        new = update_multiplier(m, spend, per_interval, budget, full, cfg, upper, lower, clip)
        m = np.where(budget > 0, new, m)
    return m, evaluated, spend


def open_market(desk: CampaignDesk, arms: list[Arm], market: Marketplace, cfg: Config,
                rng: np.random.Generator) -> list[Opening]:
    """Set every set of budgets' multipliers to the forecast's (module docstring); return them.

    Every arm serves the whole sample and its spend is weighted by the arm's traffic share at
    time 0 (:meth:`sim.campaigns.CampaignDesk.traffic_shares`), so the two arms of an A/A test
    see the same requests and open alike, rather than differing by which of the sample's users
    each was assigned."""
    pc = cfg.pacing
    batch = sample_requests(cfg, market, rng)
    share = len(batch) / cfg.traffic.requests_per_day  # of the day's expected requests
    traffic = desk.traffic_shares()
    parts = [(arm, batch, arm_work(arm, arm.cfg)) for arm in arms
             if len(batch) and traffic.get(arm.name, 1.0) > 0]
    load = fleet_load(((round(len(batch) * traffic.get(arm.name, 1.0)), work)
                       for arm, _, work in parts), max(share, 1e-9) * DAY_S)
    n = desk.adv.n
    out = []
    for b in desk.budgets:
        mine = [(arm, part, work) for arm, part, work in parts if arm.budgets is b]
        eligible = b.ledger.eligible()

        def spend_at(m: np.ndarray, b: Budgets = b, mine: list[Part] = mine,
                     eligible: np.ndarray = eligible) -> np.ndarray:
            b.multiplier[:] = m  # what the funnel reads (sim.serving.funnel.arm_actuators)
            total = np.zeros(n)
            for arm, part, work in mine:
                auc = arm.cfg.auction
                imps = serve(arm, market, arm.cfg, arm.cfg.seed, part, eligible, load,
                             work).impressions
                cost = forecast_cost(imps, np.asarray(auc.slot_ctr[:auc.n_slots]))
                total += traffic.get(arm.name, 1.0) * np.bincount(imps.advertiser, cost,
                                                                   minlength=n)
            return total * pc.interval_s / DAY_S / share

        start = b.multiplier.copy()
        caches = [(arm.query_cache.vectors.copy(), arm.query_cache.valid.copy())
                  for arm, _, _ in mine]
        try:
            if mine:
                m, evaluated, spend = controller_rounds(
                    start, spend_at, b.ledger.budget, pc, pc.opening_rounds, desk.ceiling(b),
                    desk.floor, desk.error_clip)
            else:  # no traffic reaches these budgets at time 0: they keep their start
                m, evaluated, spend = start, start.copy(), np.zeros(n)
        finally:
            b.multiplier[:] = start
            for (arm, _, _), (vectors, valid) in zip(mine, caches, strict=True):
                arm.query_cache.vectors[:], arm.query_cache.valid[:] = vectors, valid
        b.multiplier[:] = m
        out.append(Opening(name=b.name, multiplier=m.copy(), forecast_multiplier=evaluated,
                           forecast_spend=spend * DAY_S / pc.interval_s,
                           budget=b.ledger.budget.copy(), requests=len(batch)))
    return out
