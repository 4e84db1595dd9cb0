"""How the market opens: each campaign's pacing multiplier at time 0, from a forecast of the
first day's delivery (and a budget-split arm's when a ramp step first funds it, from a forecast
of the rest of its day).

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
the budget both expressed per pacing interval at the mean rate of the rest of the day (of the
whole day at time 0). The same sample every
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
not forecast (no conversion has been seen): it is what it is then (1 at time 0; an arm a ramp
holds at 0 runs its autobidder with no spend meanwhile), and an autobid campaign's
opening multiplier is kept within the autobidder's lead of it (``LEAD``, as every live update
keeps it: :func:`sim.autobidding.unwind`). A budget-split arm without traffic at time 0 (a ramp
that holds it at 0) has no budget and keeps its ceiling until a ramp step funds it; then, at the
first traffic after the step, it is opened the same way, with the funnel as it stands then
(the releases and index deploys since time 0), on a sample of the rest of its day against what
is left of its day's sub-budget, spent along the rest of the day. Nothing is charged,
logged as traffic or trained on. The forecast's multipliers, its spend at them and the auctions
it saw are logged (``opening``) beside the day's realised spend (``budget_days``).

**The three market presets open with it; the default world does not yet.** A world fitted to a
real marketplace's rates should not inherit a first morning no platform has, so
``scenarios/market_feed.yaml`` and ``scenarios/market_display.yaml`` (each refitted with it) and
``scenarios/market_auctionnet.yaml`` (its fit checked under it) set ``forecast``
(docs/calibration.md). It moves every world's first day, so every lesson's figures (but the
real-marketplace lesson's, on the feed preset) and the diagnosis benchmark's rates, which were
measured with the ceiling start, move with it; until they are re-measured the default stays
``ceiling``
(measured here in the default world at seeds
0-4: the budget-bound advertisers' day-0 mean gap between spent share and traffic share is
0.023-0.033 with the forecast, as on day 1, against 0.045-0.101 at the ceiling;
docs/mechanisms.md, Pacing).

Cost: ``opening_rounds x opening_requests`` requests through each arm's funnel with traffic
(32,000 at the defaults, a fifth of a default day's traffic; 3.4-8.6 s of a default world's
75-172 s and 3.7 s of a feed preset world's 168 s, each with other worlds beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from sim.autobidding import LEAD
from sim.campaigns import CampaignDesk
from sim.clock import DAY_S
from sim.config.schema import Config, PacingConfig, TrafficConfig
from sim.pacing import Budgets, update_multiplier
from sim.serving.arm import Arm
from sim.serving.funnel import Served, arm_work, serve
from sim.serving.latency import fleet_load
from sim.world.catalog import OCPM
from sim.world.marketplace import Marketplace
from sim.world.traffic import RequestBatch, day_share, draw_requests

OPENING_ID_BASE = 1 << 41  # the forecast's request ids (the exploration log's start at 1 << 40)


@dataclass(frozen=True, kw_only=True)
class Opening:
    """One set of budgets' opening at ``time`` (0, or a ramp step that funds it): (A,)
    ``multiplier`` (what it starts at), and the last round's ``forecast_multiplier``,
    ``forecast_spend`` (the sample's spend at it, over the rest of the day) and ``auctions``
    (those it took part in, in the sample), beside the (A,) ``budget`` the forecast planned for
    (what is left of today's); ``requests`` in the sample."""

    name: str
    time: float
    multiplier: np.ndarray
    forecast_multiplier: np.ndarray
    forecast_spend: np.ndarray
    auctions: np.ndarray
    budget: np.ndarray
    requests: int


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """One round of the forecast at some multipliers: (A,) spend of one pacing interval at the
    mean rate of the rest of the day, and the auctions each advertiser took part in, in the
    sample."""

    spend: np.ndarray
    auctions: np.ndarray


def forecast_cost(served: Served) -> np.ndarray:
    """What the platform expects to charge for each of ``served``'s impressions: the auction's
    payment for its slot (per impression, :mod:`sim.auction`), which for a click-charged one is
    the price per click times the clicks the platform expects there (its pCTR times the slot's
    CTR belief), never the world's truth."""
    imps = served.impressions
    return served.auctioned.result.payments[imps.row, imps.position]


@dataclass(frozen=True, kw_only=True)
class RestOfDay:
    """What is left of the day at some time: its ``seconds`` and its ``share`` of the day's
    expected traffic (at time 0, the whole day: 86,400 s and exactly 1)."""

    seconds: float
    share: float


def rest_of_day(now: float, traffic: TrafficConfig) -> RestOfDay:
    """The rest of the day ``now`` is in (a time at midnight starts its day)."""
    end = (np.floor(now / DAY_S) + 1.0) * DAY_S
    return RestOfDay(seconds=float(end - now), share=1.0 - day_share(now, traffic))


def sample_requests(cfg: Config, market: Marketplace, rng: np.random.Generator, now: float,
                    first_id: int) -> RequestBatch:
    """About ``pacing.opening_requests`` requests of the rest of the day from ``now`` (the whole
    first day at time 0; a Poisson count, arrival times by the daily curve, users by activity
    and surfaces as live requests are drawn), with request ids from ``first_id``. The rest of the
    day must hold traffic."""
    rest = rest_of_day(now, cfg.traffic)
    traffic = dataclasses.replace(cfg.traffic,
                                  requests_per_day=float(cfg.pacing.opening_requests) / rest.share)
    return draw_requests(rng, now, now + rest.seconds, traffic, market.users, market.surface_mix,
                         first_id)


def controller_rounds(start: np.ndarray, forecast: Callable[[np.ndarray], Forecast],
                      budget: np.ndarray, cfg: PacingConfig, rounds: int,
                      upper: np.ndarray | float, lower: np.ndarray | float,
                      error_clip: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, Forecast]:
    """``rounds`` steps of the pacing controller from ``start`` on a forecast: ``forecast(m)``
    at multipliers ``m``, against ``budget`` (A,) a day (after a ramp step funds an arm, what is
    left of its day's budget, as a day's: the plan and the error's scale at the rest of the day's
    rate), each error bounded by ``error_clip``
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


def open_market(desk: CampaignDesk, arms: list[Arm], market: Marketplace, cfg: Config,
                rng: np.random.Generator, now: float = 0.0, names: Collection[str] | None = None,
                first_id: int = OPENING_ID_BASE) -> list[Opening]:
    """Set the multipliers of the sets of budgets ``names`` (every one by default) to the
    forecast of their delivery over the rest of the day from ``now`` (module docstring); return
    their openings.

    Every arm serves the whole sample and its spend is weighted by its traffic share at ``now``,
    so the two arms of an A/A test see the same requests and open alike, rather than differing
    by which of the sample's users each was assigned. Budgets no traffic reaches at ``now`` (a
    budget-split arm a ramp holds at 0) keep their start and are not opened (no opening); they
    are opened when a ramp step funds them, with the funnel as it stands then
    (:meth:`sim.simulation.Simulation.open_market`).
    The budget forecast for is what is left of today's, spent along the rest of the day."""
    pc = cfg.pacing
    batch = sample_requests(cfg, market, rng, now, first_id)
    rest = rest_of_day(now, cfg.traffic)
    rest_s = rest.seconds
    # of the rest of the day's expected requests (of the whole day's at time 0)
    share = len(batch) / (cfg.traffic.requests_per_day * rest.share)
    weights = desk.traffic_shares()
    parts = [(arm, arm_work(arm, arm.cfg)) for arm in arms if len(batch) and weights[arm.name] > 0]
    load = fleet_load(((len(batch) * weights[arm.name], work) for arm, work in parts),
                      max(share, 1e-9) * rest_s)  # the fleet's load at now's shares
    n = desk.adv.n
    out = []
    for b in desk.budgets:
        if names is not None and b.name not in names:
            continue
        mine = [(arm, work) for arm, work in parts if arm.budgets is b]
        if not mine:  # no traffic reaches these budgets now: they keep their start, unopened
            continue
        eligible = b.ledger.eligible()
        left = np.maximum(b.ledger.budget - b.ledger.spent_today, 0.0)  # for the rest of today
        # as a day's at the rest of the day's rate (x 1 at time 0): the plan and the error's
        # scale. Live, the error's scale after a step stays the day's sub-budget, so late in a
        # day its steps are up to a day / the rest larger than the plan's (bounded by the clip);
        # the forecast keeps the stable scale
        budget = left * (DAY_S / rest_s)
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
                # every round sees the query cache as it was at ``now`` (serving a batch fills it)
                arm.query_cache.vectors[:], arm.query_cache.valid[:] = vectors, valid
                served = serve(arm, market, arm.cfg, arm.cfg.seed, batch, eligible, load, work)
                spend += weights[arm.name] * np.bincount(
                    served.impressions.advertiser, forecast_cost(served), minlength=n)
                auctions += weights[arm.name] * np.bincount(served.auctioned.entrants(),
                                                            minlength=n)
            # the sample's auctions per arm serving it (each arm serves the whole sample: the
            # estimate rests on one sample's auctions however many arms share the budgets)
            wsum = sum(weights[arm.name] for arm, _ in mine)
            return Forecast(spend=spend * pc.interval_s / rest_s / share, auctions=auctions / wsum)

        start = b.multiplier.copy()
        try:
            m, evaluated, seen = controller_rounds(start, forecast, budget, pc,
                                                   pc.opening_rounds, upper, desk.floor,
                                                   desk.error_clip)
        finally:
            b.multiplier[:] = start
            for (arm, _), (vectors, valid) in zip(mine, caches, strict=True):
                arm.query_cache.vectors[:], arm.query_cache.valid[:] = vectors, valid
        b.multiplier[:] = m
        out.append(Opening(name=b.name, time=now, multiplier=m.copy(),
                           forecast_multiplier=evaluated,
                           forecast_spend=seen.spend * rest_s / pc.interval_s,
                           auctions=seen.auctions, budget=left, requests=len(batch)))
    return out
