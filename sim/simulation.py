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
* ``traffic``   every ``traffic.tick_s``: draw the requests of [t, t + tick), assign each to an
                arm by its user, and serve them as one batch per arm.

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
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from sim.autobidding import ConversionBook
from sim.campaigns import CampaignDesk
from sim.clock import DAY_S, StagedEnvironment, hour_of
from sim.config.overlay import arm_config
from sim.config.schema import ARTIFACTS, Config
from sim.evaluation import evaluation_rows, offline_eval, skew_sweep
from sim.experiment import in_treatment
from sim.features.coverage import count_coverage, coverage_shares, flush_coverage
from sim.features.registry import FeatureRegistry
from sim.lifecycle import Lifecycle
from sim.logs.writer import LogWriter
from sim.models.bootstrap import train_initial_models
from sim.models.checkpoints import Checkpoints
from sim.models.registry import Registry
from sim.models.releases import teacher_pcvr
from sim.models.training_log import TrainingLog
from sim.parity_audit import family_importance, parity_audit
from sim.progress import Progress
from sim.rng import Streams
from sim.serving import records
from sim.serving.arm import Arm, QueryCache
from sim.serving.deployer import reference_contexts
from sim.serving.funnel import Impressions, Served, arm_work, serve
from sim.serving.index import TIERS
from sim.serving.latency import fleet_load
from sim.serving.pipeline import IndexPipeline
from sim.serving.probe import probe, probe_size
from sim.threads import Threads
from sim.threads import apply as apply_threads
from sim.threads import resolve as resolve_threads
from sim.world.catalog import OCPM
from sim.world.marketplace import Marketplace, build_marketplace, churn
from sim.world.traffic import RequestBatch, draw_requests


@dataclass
class Stats:
    requests: int = 0
    impressions: int = 0
    batches: int = 0
    data_plane_s: float = 0.0
    bootstrap: dict[str, Any] = field(default_factory=dict)


def readiness_lineages(cfg: Config, arm_cfgs: dict[str, Config]) -> tuple[dict[str, str], dict[str, str]]:
    """The skew sweep's lineage for each checked family (``readiness.families``, or else
    every family an arm serves; family -> lineage), and the readiness
    lineages to train beside control's models for the checked families no arm serves."""
    served = {acfg.models.l1_family: f"{arm}/l1" for arm, acfg in reversed(arm_cfgs.items())}
    families = list(cfg.readiness.families) or list(dict.fromkeys(
        acfg.models.l1_family for acfg in arm_cfgs.values()))  # default: every served family
    sweep, extra = {}, {}
    for family in families:
        sweep[family] = served.get(family, f"readiness/{family}")
        if family not in served:
            extra[f"readiness/{family}"] = family
    return sweep, extra


class Simulation:
    """Build the world and its initial models, then run the processes until the horizon."""

    def __init__(self, cfg: Config, writer: LogWriter, progress: Progress | None = None,
                 threads: Threads | None = None) -> None:
        self.threads = resolve_threads(cfg) if threads is None else threads
        apply_threads(self.threads)
        self.cfg, self.writer, self.progress = cfg, writer, progress
        self.streams = Streams(cfg.seed)
        self.horizon = cfg.days * DAY_S
        self.market: Marketplace = build_marketplace(cfg, self.streams)
        self.registry = Registry()
        arms = list(cfg.experiment.arms)
        self.arm_cfgs = {"control": cfg}
        if "treatment" in arms:
            self.arm_cfgs["treatment"] = arm_config(cfg, dict(cfg.experiment.treatment))
        self.readiness, extra = readiness_lineages(cfg, self.arm_cfgs)
        plan = [(f"{a}/l2", acfg, {f"{a}/l1": acfg.models.l1_family} | (extra if a == "control" else {}))
                for a, acfg in self.arm_cfgs.items()]
        cache = cfg.cache
        # deterministic mode gives the same models at 1 and 2 threads: the key leaves the count out
        threads_key = "deterministic" if self.threads.deterministic else self.threads.torch
        self.checkpoints = Checkpoints(None if cache.dir is None else Path(cache.dir), cache.max_mb,
                                       threads_key)
        boot = train_initial_models(self.market, cfg, self.streams, self.registry, plan,
                                    self.checkpoints)
        for lineage in self.registry.lineages():
            self.writer.append("model_releases", self.registry.log_rows(self.registry.latest(lineage)))
        self.stats = Stats(bootstrap=boot)
        self.training_log = TrainingLog(cfg.releases.train_window_s, cfg.releases.train_max_rows,
                                        keep_s=cfg.releases.train_window_s + cfg.releases.label_wait_s)
        self.contexts = reference_contexts(self.market, cfg, self.streams.get("contexts"))
        self.surfaces = np.asarray(cfg.world.surfaces)
        self.env = StagedEnvironment()
        self.desk = CampaignDesk(cfg, self.market.advertisers, self.market.users, writer,
                                 self.arm_cfgs)
        self.arms: list[Arm] = []
        for code, (name, acfg) in enumerate(self.arm_cfgs.items()):
            l1 = self.registry.latest(f"{name}/l1")
            self.arms.append(Arm(
                name=name, code=code, cfg=acfg, family=l1.family, l1_lineage=f"{name}/l1",
                l2_lineage=f"{name}/l2", query_model=l1.tower, query_version=1,
                l2=self.registry.latest(f"{name}/l2").ranker, budgets=self.desk.by_arm[name],
                query_cache=QueryCache.empty(self.market.users.n, acfg.models.embedding_dim + 1),
                features=FeatureRegistry.from_config(acfg.features)))
        self.lifecycle = Lifecycle(cfg, self.market, self.registry, self.training_log, self.arms,
                                   extra, self.streams, writer, self.checkpoints)
        self.pipelines = [IndexPipeline(arm, self.market, arm.cfg, self.lifecycle.item_tower(arm),
                                        self.contexts, writer) for arm in self.arms]
        for pipe in self.pipelines:
            pipe.initial_deploy(0.0)
        self.next_request_id = 0
        self.training_chunks = 0  # chunks appended to the training log (``training_rows``)

    # -- control plane --------------------------------------------------------------------

    def churn(self) -> Generator[simpy.Event, None, None]:
        rng = self.streams.get("churn")
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
        cfg, w = arm.cfg, self.writer
        objective = self.market.advertisers.objective
        served = serve(arm, self.market, cfg, cfg.seed, batch, eligible, load, work)
        imps = served.impressions
        tick = arm.budgets.book(imps.advertiser, imps.cost)
        auc = served.auctioned  # an advertiser's auction counts once, whatever its ads in it
        seen = np.sort(np.where(auc.present, auc.advertiser, -1), axis=1)
        first = np.ones(seen.shape, bool)
        first[:, 1:] = seen[:, 1:] != seen[:, :-1]
        arm.budgets.saw(seen[first & (seen >= 0)])
        if arm.budgets.conversions is not None:
            self._book_ocpm(arm.budgets.conversions, batch, imps, objective)
        self.stats.impressions += imps.row.size
        w.append("requests", records.request_rows(served, arm.name, self.surfaces))
        w.append("impressions", records.impression_rows(served, arm.name, self.surfaces,
                                                        objective))
        w.append("clicks", records.click_rows(served, arm.name, objective))
        w.append("conversions", records.conversion_rows(
            served, arm.name, objective, cfg.world.attribution_window_s, self.horizon))
        lc = cfg.logs
        sample = records.sampled_candidates(served, cfg.seed, lc.full_request_rate,
                                            lc.partial_request_rate, lc.partial_candidates)
        cand = records.candidate_rows(served, arm, self.market, cfg, sample, self.surfaces)
        if cand is not None:
            w.append("candidates", cand)
        logged = records.training_rows(
            served, arm, self.market, None if cand is None else cand["true_pcvr"], sample)
        self.training_log.append(logged)
        if self.cfg.logs.training_rows and len(logged):
            w.append("training_rows", {"chunk": self.training_chunks, "logged_at": self.env.now,
                                       **{f.name: getattr(logged, f.name)
                                          for f in dataclasses.fields(logged)}})
            self.training_chunks += 1
        self._count_versions(arm, served)
        self._probe(arm, batch)
        ret = served.retrieved
        scored = int((served.ranked.ok1 & served.latency.ok["l2"][:, None]).sum())  # not timed out
        count_coverage(arm.coverage, hour_of(self.env.now), ret.item_families[ret.live], scored,
                       arm.features.families("l2_feature_store"), logged.families)
        conv = imps.outcomes.conversion
        self.market.offsite.record(imps.slot[conv], imps.ad_id[conv],
                                   batch.time[imps.row[conv]] + imps.outcomes.delay_s[conv])
        spent = np.flatnonzero(tick > 0)
        w.append("spend", {"time": self.env.now, "day": int(self.env.now // DAY_S),
                           "arm": arm.name, "advertiser_id": spent, "tick_spend": tick[spent],
                           "spent_today": arm.budgets.ledger.spent_today[spent],
                           "budget": arm.budgets.ledger.budget[spent]})

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

    def _count_versions(self, arm: Arm, served: Served) -> None:
        """Accumulate (hour, tier, query - item version) counts of the live retrieved candidates."""
        hour = hour_of(self.env.now)
        ret = served.retrieved
        tier = ret.tier[ret.live].astype(np.int64)
        dist = served.query_version - ret.item_version[ret.live].astype(np.int64)
        code = tier * 4096 + (dist + 2048)
        keys, counts = np.unique(code, return_counts=True)
        for key, c in zip(keys.tolist(), counts.tolist(), strict=True):  # a few (tier, distance)
            k = (hour, key // 4096, key % 4096 - 2048)
            arm.version_counts[k] = arm.version_counts.get(k, 0) + c

    def _flush_version_counts(self) -> None:
        for arm in self.arms:
            if not arm.version_counts:
                continue
            keys = sorted(arm.version_counts)
            self.writer.append("version_distance", {
                "hour": [k[0] for k in keys], "arm": arm.name,
                "tier": [TIERS[k[1]] for k in keys], "distance": [k[2] for k in keys],
                "candidates": [arm.version_counts[k] for k in keys]})
            arm.version_counts.clear()

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
        env.process(self.lifecycle.releaser(env, wait))
        for pipe in self.pipelines:
            env.process(pipe.enrichment(env, wait))
            env.process(pipe.snapshots(env, wait))
            env.process(pipe.tier_builds(env, wait, "large"))
            env.process(pipe.tier_builds(env, wait, "fresh"))
        env.process(self.traffic())
        env.run(until=self.horizon)
        self._flush_version_counts()
        for arm in self.arms:
            flush_coverage(arm.coverage, arm.name, self.writer)
        self.desk.close_day(int(np.ceil(self.horizon / DAY_S)) - 1)
        return self.stats

    def evaluate(self) -> dict[str, Any]:
        """Offline evaluation and the skew sweep on the rows of
        :func:`sim.evaluation.evaluation_rows` (after the run); ``window`` says which rows and how
        many."""
        lineages = [lin for arm in self.arms for lin in (arm.l1_lineage, arm.l2_lineage)]
        rows, window = evaluation_rows(self.training_log, self.registry, lineages, self.horizon,
                                       self.cfg, self.streams.get("offline_eval"))
        if rows is None:
            return {"window": window}
        users, cfg, w = self.market.users, self.cfg, self.writer
        models = {arm.name: (arm.l1_lineage, arm.l2_lineage) for arm in self.arms}
        out: dict[str, Any] = {"window": window, "models": offline_eval(
            self.registry, models, "control/l2", rows, users, cfg, w)}
        out |= skew_sweep(self.registry, self.readiness, "control/l2", rows, users, cfg, w)
        out["importance"] = {}
        ns = len(cfg.world.surfaces)
        for arm in self.arms:  # importance against the arm's own teacher, as it is scored
            teacher = teacher_pcvr(self.registry.latest(arm.l2_lineage).ranker, rows, users, ns)
            imp = family_importance(self.registry.latest(arm.l1_lineage).tower, teacher, rows,
                                    users, ns, cfg.world.latent_dim)
            out["importance"][arm.name] = imp
            parity_audit(arm.name, coverage_shares(arm.coverage.total), imp, w)
        return out
