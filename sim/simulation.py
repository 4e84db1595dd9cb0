"""One world in simulated time: the SimPy processes of the control plane around the data plane.

Processes (each a thin generator around pure functions):

* ``pacing``, ``ramp`` (:mod:`sim.campaigns`): every ``pacing.interval_s`` a pacing update for
                the interval just ended, and at each day boundary the budgets close and reset;
                at each ramp step the treatment share changes (and budget-split sub-budgets).
* ``churn``     every ``world.churn_interval_s``: replace expired ads, refresh some ads' features.
* ``offsite``   every ``world.offsite_refresh_interval_s``: the offsite counters' feature job.
* ``feature_changes`` per arm, each scheduled change of its feature registry at its day
                (:mod:`sim.features.registry`).
* ``releaser``  every ``releases.interval_s``: train and register the next model versions;
                each arm's query tower follows after the rollout delay (:mod:`sim.lifecycle`).
* per arm, the index pipeline (:mod:`sim.serving.pipeline`): ``enrichment``, ``snapshots``,
                and the ``large`` and ``fresh`` tier builds, each deployed after its delay.
* ``traffic``   first, with ``pacing.opening=forecast``, the market's opening (:mod:`sim.opening`:
                the first day's multipliers from a forecast of its delivery); then every
                ``traffic.tick_s``: open any budget-split arm a ramp step has just given its
                first traffic (the same forecast, for the rest of its day), draw the requests of
                [t, t + tick), assign each to an arm by its user, and serve them as one batch per
                arm.

Same-time order is explicit: every event is scheduled with the priority of its stage
(:data:`sim.clock.STAGES`, earlier first). So the requests of
[t, t + tick) see the budgets, multipliers, catalog, models and index tiers as they are at ``t``,
a build at ``t`` reads the snapshot of ``t``, and a run stops at its horizon before anything
scheduled there happens.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from sim.autobidding import ConversionBook
from sim.build import World, build_world
from sim.clock import DAY_S, hour_of
from sim.config.schema import ARTIFACTS, OBJECTIVES, Config
from sim.evaluation import after_run
from sim.experiment import in_treatment
from sim.features.coverage import count_coverage, flush_coverage
from sim.logs.writer import LogWriter
from sim.opening import OPENING_ID_BASE, open_market, rest_of_day
from sim.progress import Progress
from sim.results import OfflineResults
from sim.serving import records
from sim.serving.arm import Arm
from sim.serving.funnel import Impressions, arm_work, serve
from sim.serving.latency import fleet_load
from sim.serving.probe import probe, probe_size
from sim.threads import Threads
from sim.world.catalog import OCPM
from sim.world.marketplace import churn
from sim.world.traffic import RequestBatch, draw_requests


@dataclass
class Stats:
    requests: int = 0
    impressions: int = 0
    batches: int = 0
    data_plane_s: float = 0.0
    opening_s: float = 0.0  # the delivery forecasts (sim.opening): time 0's, a funded arm's
    bootstrap: dict[str, Any] = field(default_factory=dict)


class Simulation:
    """The processes of a built world (:func:`sim.build.build_world`, with its serving stack),
    run until the horizon: :meth:`from_config` builds and wires one."""

    def __init__(self, world: World, writer: LogWriter, progress: Progress | None = None) -> None:
        if not isinstance(world, World):
            raise TypeError(f"Simulation takes a built world, got {type(world).__name__}: "
                            "Simulation.from_config(cfg, writer) builds one")
        if world.serving is None:
            raise ValueError("a simulation serves traffic: build the world with serving=True")
        self.world, self.writer, self.progress = world, writer, progress
        self.cfg, self.market, self.env = world.cfg, world.market, world.env
        self.horizon = world.horizon
        self.serving = world.serving
        self.desk, self.arms = world.serving.desk, world.serving.arms
        self.surfaces = np.asarray(self.cfg.world.surfaces)
        self.stats = Stats(bootstrap=world.bootstrap)
        self.next_request_id = 0
        self.next_opening_id = OPENING_ID_BASE  # the forecasts' request ids (sim.opening)
        self.training_chunks = 0  # chunks appended to the training log (``training_rows``)

    @classmethod
    def from_config(cls, cfg: Config, writer: LogWriter, progress: Progress | None = None,
                    threads: Threads | None = None) -> Simulation:
        return cls(build_world(cfg, writer, threads=threads), writer, progress)

    # -- control plane --------------------------------------------------------------------

    def churn(self) -> Generator[simpy.Event, None, None]:
        rng = self.world.streams.get("churn")
        while True:
            yield self.env.wait("churn", self.cfg.world.churn_interval_s)
            churn(self.market, self.cfg, self.env.now, rng)

    def offsite_refresh(self) -> Generator[simpy.Event, None, None]:
        while True:
            yield self.env.wait("offsite_refresh", self.cfg.world.offsite_refresh_interval_s)
            self.market.refresh_offsite(self.env.now)

    def feature_changes(self, arm: Arm) -> Generator[simpy.Event, None, None]:
        """Apply the arm's scheduled registry changes at their simulated times."""
        for change in arm.cfg.features.changes:
            delay = change.day * DAY_S - self.env.now
            if delay > 0:
                yield self.env.wait("feature_change", delay)
            changed = arm.features.apply(change, self.env.now)
            self.writer.append("feature_changes", {
                "time": self.env.now, "arm": arm.name, "day": change.day,
                "changed_artifacts": ",".join(changed),
                **{a: ",".join(sorted(arm.features.families(a))) for a in ARTIFACTS}})

    # -- data plane -----------------------------------------------------------------------

    def open_market(self, names: list[str] | None = None) -> None:
        """The multipliers of the sets of budgets ``names`` (at time 0, every one) from a
        forecast of their delivery over the rest of the day (:mod:`sim.opening`), with
        ``pacing.opening=forecast`` and pacing on; logged as ``opening``."""
        pc = self.cfg.pacing
        if not (pc.enabled and pc.opening == "forecast"):
            return
        started = time.perf_counter()
        rng = self.world.streams.get("opening")
        adv = self.market.advertisers
        openings = open_market(self.desk, self.arms, self.market, self.cfg, rng, self.env.now,
                               names, self.next_opening_id)
        self.next_opening_id += max((o.requests for o in openings), default=0)  # one sample
        for o in openings:
            self.writer.append("opening", {
                "time": o.time, "arm": o.name, "advertiser_id": np.arange(adv.n),
                "objective": np.asarray(OBJECTIVES)[adv.objective], "multiplier": o.multiplier,
                "forecast_multiplier": o.forecast_multiplier, "forecast_spend": o.forecast_spend,
                "auctions": o.auctions, "budget": o.budget, "requests": o.requests,
                "rounds": pc.opening_rounds})
        self.stats.opening_s += time.perf_counter() - started

    def traffic(self) -> Generator[simpy.Event, None, None]:
        self.open_market()  # at time 0, after the processes started before this one
        rng = self.world.streams.get("traffic")
        tick = self.cfg.traffic.tick_s
        while True:
            t0 = self.env.now
            # a ramp step has given a budget-split arm its first traffic: it opens on the rest of
            # the day (kept for the next day's first tick if no traffic is left in this one)
            if self.desk.funded and rest_of_day(t0, self.cfg.traffic).share > 0:
                self.open_market(self.desk.funded)
                self.desk.funded = []
            t1 = min(t0 + tick, self.horizon)
            batch = draw_requests(rng, t0, t1, self.cfg.traffic, self.market.users,
                                  self.market.surface_mix, self.next_request_id)
            self.next_request_id += len(batch)
            if len(batch):
                started = time.perf_counter()
                self.serve_tick(batch, t1 - t0)
                self.stats.data_plane_s += time.perf_counter() - started
                self.stats.requests += len(batch)
                self.stats.batches += 1
            if self.progress is not None:
                self.progress(t1, self.stats.requests)
            yield self.env.wait("traffic", t1 - t0)

    def serve_tick(self, batch: RequestBatch, seconds: float) -> None:
        """The data plane of one tick of ``seconds``: each arm's requests through its funnel,
        then the tick's budget bookkeeping. Budgets are checked once per tick, for both arms alike
        (the overspend this allows is at most one tick's spend, measured in budget_days). One
        serving fleet: every arm's latency follows the load all arms bring over the tick."""
        eligible = {id(b): b.ledger.eligible() for b in self.desk.budgets}
        parts = [(arm, rows, arm_work(arm, arm.cfg)) for arm, rows in self._assign(batch)
                 if rows.size]
        load = fleet_load(((rows.size, work) for _, rows, work in parts), seconds)
        for arm, rows, work in parts:
            self._serve(arm, batch.take(rows), eligible[id(arm.budgets)], load, work)
        for b in self.desk.budgets:
            b.ledger.end_tick()

    def _assign(self, batch: RequestBatch) -> list[tuple[Arm, np.ndarray]]:
        """Rows of the batch for each arm, by the users' assignment at the current share."""
        if len(self.arms) == 1:
            return [(self.arms[0], np.arange(len(batch)))]
        treat = in_treatment(self.cfg.experiment.salt, batch.user, self.desk.share)
        return [(self.arms[0], np.flatnonzero(~treat)), (self.arms[1], np.flatnonzero(treat))]

    def _serve(self, arm: Arm, batch: RequestBatch, eligible: np.ndarray,
               load: dict[str, float], work: dict[str, float]) -> None:
        cfg = arm.cfg
        objective = self.market.advertisers.objective
        served = serve(arm, self.market, cfg, cfg.seed, batch, eligible, load, work)
        imps = served.impressions
        tick = arm.budgets.book(imps.advertiser, imps.cost)
        arm.budgets.saw(served.auctioned.entrants())
        if arm.budgets.conversions is not None:
            self._book_ocpm(arm.budgets.conversions, batch, imps, objective)
        self.stats.impressions += imps.row.size
        logged = records.log_batch(self.writer, served, arm, self.market, self.surfaces,
                                   self.horizon, self.env.now, tick)
        self.world.training_log.append(logged)
        if self.cfg.logs.training_rows and len(logged):
            self.writer.append("training_rows",
                               records.logged_chunk(self.training_chunks, self.env.now, logged))
            self.training_chunks += 1
        records.count_versions(arm.version_counts, hour_of(self.env.now), served)
        self._probe(arm, batch)
        ret = served.retrieved
        scored = int((served.ranked.ok1 & served.latency.ok["l2"][:, None]).sum())  # not timed out
        count_coverage(arm.coverage, hour_of(self.env.now), ret.item_families[ret.live], scored,
                       arm.features.families("l2_feature_store"), logged.families)
        conv = imps.outcomes.conversion
        self.market.offsite.record(imps.slot[conv], imps.ad_id[conv],
                                   batch.time[imps.row[conv]] + imps.outcomes.delay_s[conv])

    def _book_ocpm(self, book: ConversionBook, batch: RequestBatch, imps: Impressions,
                   objective: np.ndarray) -> None:
        """What the autobidder watches: the tick's oCPM costs and their attributed conversions,
        each at the time it will happen (it counts them only once they have)."""
        ocpm = objective[imps.advertiser] == OCPM
        out = imps.outcomes
        att = ocpm & out.conversion & (out.delay_s <= self.cfg.world.attribution_window_s)
        book.record(
            imps.advertiser[ocpm], imps.cost[ocpm], imps.advertiser[att],
            batch.time[imps.row[att]] + out.delay_s[att])

    def _probe(self, arm: Arm, batch: RequestBatch) -> None:
        """The serving-path probe on the first requests of the arm's batch (``serving_path``)."""
        cfg = arm.cfg
        m = min(probe_size(cfg.serving.probe_requests_per_hour, cfg.traffic.tick_s), len(batch))
        p = probe(arm, self.market, len(cfg.world.surfaces), cfg.funnel.k_retrieval,
                  batch.take(np.arange(m)))
        self.writer.append("serving_path", {"time": self.env.now, "hour": hour_of(self.env.now),
                                            "arm": arm.name, "query_version": arm.query_version,
                                            **dataclasses.asdict(p)})

    # -- run ------------------------------------------------------------------------------

    def run(self) -> Stats:
        """Run to the horizon, then close the last (possibly partial) day."""
        env, wait = self.env, self.env.wait
        env.process(self.desk.pacing(env, wait))
        env.process(self.desk.ramp(env, wait))
        env.process(self.desk.campaigns(env, wait, self.horizon))
        env.process(self.churn())
        env.process(self.offsite_refresh())
        for arm in self.arms:
            env.process(self.feature_changes(arm))
        env.process(self.world.lifecycle.releaser(env, wait))
        for pipe in self.serving.pipelines:
            env.process(pipe.enrichment(env, wait))
            env.process(pipe.snapshots(env, wait))
            env.process(pipe.tier_builds(env, wait, "large"))
            env.process(pipe.tier_builds(env, wait, "fresh"))
        env.process(self.traffic())
        env.run(until=self.horizon)
        for arm in self.arms:
            if arm.version_counts:
                self.writer.append("version_distance",
                                   records.version_rows(arm.name, arm.version_counts))
                arm.version_counts.clear()
        for arm in self.arms:
            flush_coverage(arm.coverage, arm.name, self.writer)
        self.desk.close_day(int(np.ceil(self.horizon / DAY_S)) - 1)
        return self.stats

    def evaluate(self) -> OfflineResults:
        """Offline evaluation, the skew sweep and the parity audit, after the run
        (:func:`sim.evaluation.after_run`)."""
        w = self.world
        return after_run(w.registry, self.arms, w.training_log, w.sweep_lineages, self.horizon,
                         self.cfg, self.market.users, w.streams.get("offline_eval"), self.writer)
