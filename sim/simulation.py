"""One world in simulated time: the SimPy processes of the control plane around the data plane.

Processes (each a thin generator around pure functions):

* ``control``   every ``pacing.interval_s``: pacing update for the interval just ended; at each
                day boundary, close the day's budgets (log ``budget_days``) and reset them.
* ``churn``     every ``world.churn_interval_s``: replace expired ads with new ones.
* ``deployer``  every ``funnel.index_rebuild_interval_s``: rebuild each arm's index and swap it in.
* ``traffic``   every ``traffic.tick_s``: draw the requests of [t, t + tick) and serve them as one
                batch per arm.

Same-time order is explicit: control-plane events are scheduled with SimPy's URGENT priority and
run before the traffic of the same instant, in the order the processes were started (control,
churn, deployer). So the requests of [t, t + tick) see the budgets, multipliers, catalog and index
as they are at ``t``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import simpy
import torch
from simpy.core import URGENT

from sim.config.schema import OBJECTIVES, Config
from sim.logs.writer import LogWriter
from sim.models.bootstrap import Bootstrap, train_initial_models
from sim.pacing import Ledger, planned_spend, update_multiplier
from sim.rng import Streams
from sim.serving import records
from sim.serving.arm import Arm
from sim.serving.deployer import build_arm_index, reference_contexts
from sim.serving.funnel import serve
from sim.world.marketplace import Marketplace, build_marketplace, churn
from sim.world.traffic import DAY_S, day_share, draw_requests

Progress = Callable[[float, int], None]


class Urgent(simpy.events.Event):
    """A timeout that fires before NORMAL events of the same instant (control-plane events)."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


@dataclass
class Stats:
    requests: int = 0
    impressions: int = 0
    batches: int = 0
    data_plane_s: float = 0.0
    index_builds: int = 0
    bootstrap: dict[str, Any] = field(default_factory=dict)


class Simulation:
    """Build the world and its initial models, then run the processes until the horizon."""

    def __init__(self, cfg: Config, writer: LogWriter, progress: Progress | None = None) -> None:
        torch.set_num_threads(cfg.models.torch_threads)
        faiss.omp_set_num_threads(cfg.models.faiss_threads)
        self.cfg, self.writer, self.progress = cfg, writer, progress
        self.streams = Streams(cfg.seed)
        self.horizon = cfg.days * DAY_S
        self.market: Marketplace = build_marketplace(cfg, self.streams)
        boot: Bootstrap = train_initial_models(self.market, cfg, self.streams)
        self.stats = Stats(bootstrap={
            "impressions": boot.impressions, "clicks": boot.clicks,
            "conversions": boot.conversions, "l2_train_loss": boot.l2_fit.loss,
            "l1_train_loss": boot.l1_fit.loss})
        self.contexts = reference_contexts(self.market, cfg, self.streams.get("contexts"))
        self.surfaces = np.asarray(cfg.world.surfaces)
        self.arms: list[Arm] = []
        for name in cfg.experiment.arms:
            index = self._build_index(boot.l1, boot.l2, 1, name, 0.0)
            self.arms.append(Arm(name, boot.l1, boot.l2, index,
                                 Ledger(self.market.advertisers.daily_budget.copy()),
                                 np.full(self.market.advertisers.n,
                                         cfg.pacing.max_multiplier)))
        self.env = simpy.Environment()
        self.next_request_id = 0

    # -- control plane --------------------------------------------------------------------

    def _build_index(self, l1: Any, l2: Any, version: int, arm: str, now: float) -> Any:
        index, build_s = build_arm_index(l1, l2, version, self.market, self.cfg,
                                         self.contexts, now)
        self.writer.append("index_builds", {"time": now, "arm": arm, "n_items": index.n,
                                            "model_version": version, "build_s": build_s})
        self.stats.index_builds += 1
        return index

    def control(self) -> Generator[simpy.Event, None, None]:
        dt = self.cfg.pacing.interval_s
        adv = self.market.advertisers
        while True:
            start = self.env.now
            yield Urgent(self.env, dt)
            now = self.env.now
            s0 = day_share(start, self.cfg.traffic)
            s1 = 1.0 if now % DAY_S == 0 else day_share(now, self.cfg.traffic)
            for arm in self.arms:
                led = arm.ledger
                plan = planned_spend(led.budget, led.spent_today - arm.interval_spent, s0, s1)
                new_m = update_multiplier(arm.multiplier, arm.interval_spent, plan, self.cfg.pacing)
                self.writer.append("pacing", {
                    "time": now, "day": int((now - 1e-9) // DAY_S), "arm": arm.name,
                    "advertiser_id": np.arange(adv.n), "multiplier": new_m, "planned": plan,
                    "actual": arm.interval_spent.copy(), "spent_today": led.spent_today.copy(),
                    "budget": led.budget})
                arm.multiplier = new_m
                arm.interval_spent[:] = 0.0
                if now % DAY_S == 0:
                    self._close_day(arm, int(now // DAY_S) - 1)

    def _close_day(self, arm: Arm, day: int) -> None:
        adv = self.market.advertisers
        closed = arm.ledger.close_day()
        self.writer.append("budget_days", {
            "day": day, "arm": arm.name, "advertiser_id": np.arange(adv.n),
            "objective": np.asarray(OBJECTIVES)[adv.objective], "budget": arm.ledger.budget,
            "spend": closed["spend"], "billed": closed["billed"],
            "overspend": closed["overspend"], "max_tick_spend": closed["max_tick_spend"]})

    def churn(self) -> Generator[simpy.Event, None, None]:
        rng = self.streams.get("churn")
        while True:
            yield Urgent(self.env, self.cfg.world.churn_interval_s)
            churn(self.market, self.cfg, self.env.now, rng)

    def deployer(self) -> Generator[simpy.Event, None, None]:
        while True:
            yield Urgent(self.env, self.cfg.funnel.index_rebuild_interval_s)
            for arm in self.arms:
                arm.index = self._build_index(arm.l1, arm.l2, arm.l1_version, arm.name,
                                              self.env.now)

    # -- data plane -----------------------------------------------------------------------

    def traffic(self) -> Generator[simpy.Event, None, None]:
        rng = self.streams.get("traffic")
        tick = self.cfg.traffic.tick_s
        while True:
            t0 = self.env.now
            t1 = min(t0 + tick, self.horizon)
            batch = draw_requests(rng, t0, t1, self.cfg.traffic, self.market.users,
                                  self.market.surface_mix, self.next_request_id)
            self.next_request_id += len(batch)
            if len(batch):
                started = time.perf_counter()
                for arm in self.arms:  # one arm serves all traffic until experiments land
                    self._serve(arm, batch)
                self.stats.data_plane_s += time.perf_counter() - started
                self.stats.requests += len(batch)
                self.stats.batches += 1
            if self.progress is not None:
                self.progress(t1, self.stats.requests)
            yield self.env.timeout(t1 - t0)

    def _serve(self, arm: Arm, batch: Any) -> None:
        cfg, w = self.cfg, self.writer
        objective = self.market.advertisers.objective
        served = serve(arm, self.market, cfg, cfg.seed, batch, arm.ledger.eligible())
        imps = served.impressions
        tick = arm.ledger.charge(imps.advertiser, imps.cost)
        arm.interval_spent += tick
        self.stats.impressions += imps.row.size
        w.append("requests", records.request_rows(served, arm.name, self.surfaces))
        w.append("impressions", records.impression_rows(served, arm.name, self.surfaces,
                                                        objective))
        w.append("clicks", records.click_rows(served, arm.name, objective))
        w.append("conversions", records.conversion_rows(
            served, arm.name, objective, cfg.world.attribution_window_s, self.horizon))
        cand = records.candidate_rows(served, arm, self.market, cfg, cfg.seed, self.surfaces)
        if cand is not None:
            w.append("candidates", cand)
        spent = np.flatnonzero(tick > 0)
        w.append("spend", {"time": self.env.now, "day": int(self.env.now // DAY_S),
                           "arm": arm.name, "advertiser_id": spent, "tick_spend": tick[spent],
                           "spent_today": arm.ledger.spent_today[spent],
                           "budget": arm.ledger.budget[spent]})

    # -- run ------------------------------------------------------------------------------

    def run(self) -> Stats:
        """Run to the horizon, then close the last (possibly partial) day."""
        for proc in (self.control, self.churn, self.deployer, self.traffic):
            self.env.process(proc())
        self.env.run(until=self.horizon)
        last_day = int(np.ceil(self.horizon / DAY_S)) - 1
        for arm in self.arms:
            self._close_day(arm, last_day)
        return self.stats
