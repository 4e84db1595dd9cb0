"""How the market opens: each campaign's pacing multiplier at time 0, from a forecast of the
first day's delivery.

A world's campaigns all start at its first midnight. Later days start from yesterday's
multipliers (:mod:`sim.pacing`), but the first has no yesterday, and starting every campaign at
its ceiling (``pacing.opening=ceiling``) breaks the pacing contract on day 0: an advertiser far
above the clearing price spends many intervals' budget per interval while the controller's
bounded step (a factor 1.28 an interval) brings it down, then waits, its plan 0, until the day's
traffic catches up with its spend. Measured in the Ali-CCP-like feed preset (seeds 110-114), its
largest oCPM advertiser spent 26-56% of its day-0 budget in the first two hours (9.4% of the
day's traffic) and was paced out until hour 8-17; in the default world (seeds 0-4) the
budget-bound advertisers' mean gap between spent share and traffic share on day 0 is 1.7-4.0
times the second day's.

Real platforms forecast a campaign's delivery before it runs (a bid landscape from the market's
logs). Here the desk does the same with what it has when the traffic starts
(``pacing.opening=forecast``; after every time-0 change, such as a day-0 feature change): a
sample of the first day's requests (``pacing.opening_requests``, users by activity and surfaces
as live requests are drawn, on the ``opening`` stream, with request ids from
:data:`OPENING_ID_BASE` so that no keyed draw of a live or exploration request is reused) is
served through every arm's funnel as it stands (the start-up models, the initial index), once a
round, each arm's spend weighted by its traffic share, and after each round the desk's own
controller (:func:`sim.pacing.update_multiplier`) takes one step, with the sample's spend and
the budget both expressed per pacing interval at the day's mean rate. The same sample every
round, and every round starts from the arms' query caches as they were: the forecast is a
function of the multipliers alone. But it is a sample: an advertiser seen in a handful of its
auctions has a noisy estimate of its day, so each step is weighted by the auctions it took part
in, in the sample, as the live controller weights an interval's (:func:`sim.pacing.step_weight`;
the weight is the sample's count, whatever a live interval brings, so in a world of many
requests an advertiser with few auctions in the sample keeps nearer its ceiling than the live
controller would put it). Each round's step is the live one, bounded as live (a bid multiplier
by a factor 1.28, a participation rate by 2.72 down and 1.65 up): the forecast plays the
controller's first intervals on a sample instead of on the advertisers' money. A wider bound was
tried and reached the same day-0 pacing in the default and feed worlds; the live one is kept for
the live reason: spend is a cliff in a bid multiplier.

What the forecast spends is what the platform expects to charge: the auction's payment for the
slot, which for a click-charged impression is the price per click times the clicks the
platform's own models expect there (the pCTR the auction ranked by times the slot's CTR belief,
``auction.slot_ctr``), never the world's true rates. The oCPM autobidder's CPA multiplier is
not forecast (no conversion has been seen): it starts at 1 as before, and an autobid campaign's
opening multiplier is kept within the autobidder's lead of it (``LEAD``, as every live update
keeps it: :func:`sim.autobidding.unwind`). A budget-split arm without traffic at time 0 (a ramp that holds it
at 0) is forecast for its sub-budget at the ramp's first positive share. Nothing is charged,
logged as traffic or trained on. The forecast's multipliers, its spend at them and the auctions
it saw are logged (``opening``) beside the day's realised spend (``budget_days``).

**Not yet the default.** It moves every world's first day, so every lesson's figures and the
diagnosis benchmark's rates, which were measured with the ceiling start, move with it; until
they are re-measured the default stays ``ceiling`` (measured here in the default world at seeds
0-4: the budget-bound advertisers' day-0 mean gap between spent share and traffic share is
0.023-0.033 with the forecast, as on day 1, against 0.045-0.101 at the ceiling;
docs/mechanisms.md, Pacing).

Cost: ``opening_rounds x opening_requests`` requests through each arm's funnel with traffic
(32,000 at the defaults, a fifth of a default day's traffic; 3.4-8.6 s of a default world's
75-172 s and 3.7 s of a feed preset world's 168 s, each with other worlds beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.autobidding import LEAD
from sim.campaigns import CampaignDesk, traffic_shares
from sim.clock import DAY_S
from sim.config.schema import Config, PacingConfig
from sim.pacing import Budgets, update_multiplier
from sim.serving.arm import Arm
from sim.serving.funnel import Served, arm_work, serve
from sim.serving.latency import fleet_load
from sim.world.catalog import OCPM
from sim.world.marketplace import Marketplace
from sim.world.traffic import RequestBatch, draw_requests

OPENING_ID_BASE = 1 << 41  # the forecast's request ids (the exploration log's start at 1 << 40)


@dataclass(frozen=True, kw_only=True)
class Opening:
    """One set of budgets' opening: (A,) ``multiplier`` (what day 0 starts at), and the last
    round's ``forecast_multiplier``, ``forecast_spend`` (the sample's spend at it, per day) and
    ``auctions`` (those it took part in, in the sample), beside the (A,) ``budget`` the forecast
    planned for; ``requests`` in the sample."""

    name: str
    multiplier: np.ndarray
    forecast_multiplier: np.ndarray
    forecast_spend: np.ndarray
    auctions: np.ndarray
    budget: np.ndarray
    requests: int


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """One round of the forecast at some multipliers: (A,) spend of one pacing interval at the
    day's mean rate, and the auctions each advertiser took part in, in the sample."""

    spend: np.ndarray
    auctions: np.ndarray


def forecast_cost(served: Served) -> np.ndarray:
    """What the platform expects to charge for each of ``served``'s impressions: the auction's
    payment for its slot (per impression, :mod:`sim.auction`), which for a click-charged one is
    the price per click times the clicks the platform expects there (its pCTR times the slot's
    CTR belief), never the world's truth."""
    imps = served.impressions
    return served.auctioned.result.payments[imps.row, imps.position]


def sample_requests(cfg: Config, market: Marketplace, rng: np.random.Generator) -> RequestBatch:
    """About ``pacing.opening_requests`` requests of the first day (a Poisson count; users by
    activity and surfaces as live requests are drawn)."""
    traffic = dataclasses.replace(cfg.traffic, requests_per_day=float(cfg.pacing.opening_requests))
    return draw_requests(rng, 0.0, DAY_S, traffic, market.users, market.surface_mix,
                         OPENING_ID_BASE)


def controller_rounds(start: np.ndarray, forecast: Callable[[np.ndarray], Forecast],
                      budget: np.ndarray, cfg: PacingConfig, rounds: int,
                      upper: np.ndarray | float, lower: np.ndarray | float,
                      error_clip: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, Forecast]:
    """``rounds`` steps of the pacing controller from ``start`` on a forecast: ``forecast(m)``
    at multipliers ``m``, against ``budget`` (A,) a day, each error bounded by ``error_clip``
    (the live bounds, :data:`sim.pacing.ERROR_CLIP` and ``ERROR_CLIP_RATE``); each step is
    weighted by the auctions the advertiser took part in, in the sample
    (:func:`sim.pacing.step_weight`: a handful of sampled wins is a noisy estimate of the day's,
    and moves the multiplier less). An advertiser without a budget keeps its start. Returns the
    final multipliers, and the last round's multipliers and forecast."""
    per_interval = budget * cfg.interval_s / DAY_S
    m = start.copy()
    evaluated = m.copy()
    seen = Forecast(spend=np.zeros_like(m), auctions=np.zeros_like(m))
    for _ in range(rounds):
        evaluated, seen = m.copy(), forecast(m)
        new = update_multiplier(m, seen.spend, per_interval, budget, seen.auctions, cfg, upper,
                                lower, error_clip)
        m = np.where(budget > 0, new, m)
    return m, evaluated, seen


def later_shares(desk: CampaignDesk, market: Marketplace, cfg: Config) -> dict[str, float]:
    """Under budget-split, each arm's traffic share at the ramp's first positive share: what an
    arm without traffic at time 0 (a ramp that holds it at 0) is forecast for. Empty otherwise
    (under user-split the arms share one set of budgets, which the time-0 traffic funds)."""
    first = next((step.share for step in cfg.experiment.ramp if step.share > 0), None)
    arms = list(cfg.experiment.arms)
    if first is None or len(arms) == 1 or cfg.experiment.design != "budget_split":
        return {}
    return traffic_shares(cfg.experiment.salt, market.users, first, arms)


def open_market(desk: CampaignDesk, arms: list[Arm], market: Marketplace, cfg: Config,
                rng: np.random.Generator) -> list[Opening]:
    """Set every set of budgets' multipliers to the forecast's (module docstring); return them.

    Every arm serves the whole sample and its spend is weighted by its traffic share (an arm that
    starts later: :func:`later_shares`), so the two arms of an A/A test see the same requests and
    open alike, rather than differing by which of the sample's users each was assigned. A
    budget-split arm without traffic at time 0 is forecast for its sub-budget at the ramp's
    first positive share (its budget is 0 until then, and its multiplier holds)."""
    pc = cfg.pacing
    batch = sample_requests(cfg, market, rng)
    share = len(batch) / cfg.traffic.requests_per_day  # of the day's expected requests
    now, later = desk.traffic_shares(), later_shares(desk, market, cfg)
    weights = {a: s if s > 0 else later.get(a, 0.0) for a, s in now.items()}
    parts = [(arm, arm_work(arm, arm.cfg)) for arm in arms if len(batch) and weights[arm.name] > 0]
    load = fleet_load(((len(batch) * now[arm.name], work) for arm, work in parts),  # time 0's
                      max(share, 1e-9) * DAY_S)
    n = desk.adv.n
    out = []
    for b in desk.budgets:
        mine = [(arm, work) for arm, work in parts if arm.budgets is b]
        eligible = b.ledger.eligible()
        budget = b.ledger.budget.copy()
        if b.name in later and not budget.any():  # a budget-split arm that starts later
            budget = desk.base_budget * later[b.name]
            eligible = budget > 0
        upper = desk.ceiling(b)
        if b.conversions is not None:  # autobid oCPM: within the autobidder's lead of its CPA
            upper = np.where(desk.adv.objective == OCPM,  # multiplier, as every live step keeps it
                             np.minimum(upper, LEAD * b.cpa_multiplier), upper)
        caches = [(arm.query_cache.vectors.copy(), arm.query_cache.valid.copy())
                  for arm, _ in mine]

        def forecast(m: np.ndarray, b: Budgets = b, mine: list[tuple[Arm, dict[str, float]]] = mine,
                     eligible: np.ndarray = eligible,
                     caches: list[tuple[np.ndarray, np.ndarray]] = caches) -> Forecast:
            b.multiplier[:] = m  # what the funnel reads (sim.serving.funnel.arm_actuators)
            spend, auctions = np.zeros(n), np.zeros(n)
            for (arm, work), (vectors, valid) in zip(mine, caches, strict=True):
                # every round sees the query cache as at time 0 (serving a batch fills it)
                arm.query_cache.vectors[:], arm.query_cache.valid[:] = vectors, valid
                served = serve(arm, market, arm.cfg, arm.cfg.seed, batch, eligible, load, work)
                spend += weights[arm.name] * np.bincount(
                    served.impressions.advertiser, forecast_cost(served), minlength=n)
                auctions += weights[arm.name] * np.bincount(served.auctioned.entrants(),
                                                            minlength=n)
            # the sample's auctions per arm serving it (each arm serves the whole sample: the
            # estimate rests on one sample's auctions however many arms share the budgets)
            wsum = sum(weights[arm.name] for arm, _ in mine)
            return Forecast(spend=spend * pc.interval_s / DAY_S / share, auctions=auctions / wsum)

        start = b.multiplier.copy()
        try:
            if mine:
                m, evaluated, seen = controller_rounds(
                    start, forecast, budget, pc, pc.opening_rounds, upper, desk.floor,
                    desk.error_clip)
            else:  # no traffic reaches these budgets: they keep their start
                m, evaluated = start, start.copy()
                seen = Forecast(spend=np.zeros(n), auctions=np.zeros(n))
        finally:
            b.multiplier[:] = start
            for (arm, _), (vectors, valid) in zip(mine, caches, strict=True):
                arm.query_cache.vectors[:], arm.query_cache.valid[:] = vectors, valid
        b.multiplier[:] = m
        out.append(Opening(name=b.name, multiplier=m.copy(), forecast_multiplier=evaluated,
                           forecast_spend=seen.spend * DAY_S / pc.interval_s,
                           auctions=seen.auctions, budget=budget, requests=len(batch)))
    return out
