"""Building a world: the one door through which a run, the readiness check and anything else
that runs a world get one.

:func:`build_world` makes, from one config, in this order: the threads, the named random streams,
the marketplace (from the streams of ``world.market_seed`` where it is set, so that one
marketplace can be run at many seeds), the arms' configs (the treatment's overlay applied), the
lineages the skew sweep reads, the checkpoint cache, the start-up models (trained on the
exploration log, or loaded; both from the streams of ``training.startup_seed`` where it is set),
the training log, the arms and the model lifecycle that releases
their next versions. With
``serving=True`` (a run) it adds what serves traffic: the campaign desk and its budgets, each arm's
serving stack and its index pipeline with the initial tiers deployed. With ``serving=False`` (the
readiness check's replay) it builds only the arms whose releases the check needs, and nothing that
serves.

Both kinds of world then run on the same SimPy environment (``world.env``) with the same release
process (:meth:`sim.lifecycle.Lifecycle.releaser`): :class:`sim.simulation.Simulation` adds the
traffic and the control plane around it, :func:`sim.readiness.replay` adds a process that appends
a finished run's logged training rows at the times the run logged them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from sim.campaigns import CampaignDesk
from sim.clock import DAY_S, StagedEnvironment
from sim.config.overlay import arm_config
from sim.config.schema import Config
from sim.features.registry import FeatureRegistry
from sim.lifecycle import Lifecycle
from sim.logs.writer import LogWriter
from sim.models.bootstrap import train_initial_models
from sim.models.checkpoints import Checkpoints
from sim.models.registry import Registry
from sim.models.training_log import TrainingLog
from sim.rng import Streams
from sim.serving.arm import Arm, QueryCache, ReleasedArm
from sim.serving.ctr_prior import ReferenceContexts, reference_contexts
from sim.serving.pipeline import IndexPipeline
from sim.threads import Threads
from sim.threads import apply as apply_threads
from sim.threads import resolve as resolve_threads
from sim.world.marketplace import Marketplace, build_marketplace


@dataclass(kw_only=True)
class Serving:
    """What serves traffic in a run: the campaign desk and each arm's serving stack (the same
    objects as :attr:`World.arms`), the reference contexts of the L1 pCTR prior, and each arm's
    index pipeline."""

    desk: CampaignDesk
    arms: list[Arm]
    contexts: ReferenceContexts
    pipelines: list[IndexPipeline]


@dataclass(kw_only=True)
class World:
    """One world, built: see the module docstring for what each part is."""

    cfg: Config
    threads: Threads
    streams: Streams
    market: Marketplace
    registry: Registry
    checkpoints: Checkpoints
    arm_cfgs: dict[str, Config]  # arm -> its config, the arms this world releases for
    sweep_lineages: dict[str, str]  # family -> the lineage the skew sweep reads for it
    extra_lineages: dict[str, str]  # readiness lineage -> family, trained beside the control's L1
    bootstrap: dict[str, int]  # the exploration log's impressions, clicks and conversions
    training_log: TrainingLog
    arms: list[ReleasedArm]
    lifecycle: Lifecycle
    env: StagedEnvironment = field(default_factory=StagedEnvironment)
    serving: Serving | None = None

    @property
    def horizon(self) -> float:
        return self.cfg.days * DAY_S


def arm_configs(cfg: Config) -> dict[str, Config]:
    """Each arm's config: the control's is ``cfg``, the treatment's ``cfg`` with its overlay."""
    out = {"control": cfg}
    if "treatment" in cfg.experiment.arms:
        out["treatment"] = arm_config(cfg, cfg.experiment.treatment)
    return out


def checked_lineages(cfg: Config, arm_cfgs: dict[str, Config]) -> tuple[dict[str, str], dict[str, str]]:
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


def checkpoint_cache(cfg: Config, threads: Threads) -> Checkpoints:
    """The run's checkpoint cache (``cache.dir``; in memory only when unset). Deterministic mode
    gives the same models at 1 and 2 threads, so its key leaves the thread count out."""
    key = "deterministic" if threads.deterministic else threads.torch
    return Checkpoints(None if cfg.cache.dir is None else Path(cfg.cache.dir), cfg.cache.max_mb,
                       key)


def build_world(cfg: Config, writer: LogWriter, *, threads: Threads | None = None,
                checked: list[str] | None = None, serving: bool = True) -> World:
    """Build the world of ``cfg`` (see the module docstring).

    ``checked``: the families the skew sweep checks, in place of ``readiness.families``.
    ``serving=False``: no serving stack, and the treatment arm only when it serves a checked
    family the control does not (a replay needs no other arm's releases)."""
    threads = resolve_threads(cfg) if threads is None else threads
    apply_threads(threads)
    if checked is not None:
        cfg = dataclasses.replace(cfg, readiness=dataclasses.replace(cfg.readiness,
                                                                     families=list(checked)))
    streams = Streams(cfg.seed)
    market_seed = cfg.world.market_seed
    market = build_marketplace(cfg, streams if market_seed is None else Streams(market_seed))
    arm_cfgs = arm_configs(cfg)
    sweep, extra = checked_lineages(cfg, arm_cfgs)
    if not serving and "treatment/l1" not in sweep.values():
        arm_cfgs.pop("treatment", None)
    registry = Registry()
    checkpoints = checkpoint_cache(cfg, threads)
    plan = [(f"{a}/l2", acfg, {f"{a}/l1": acfg.models.l1_family} | (extra if a == "control" else {}))
            for a, acfg in arm_cfgs.items()]
    startup_seed = cfg.training.startup_seed
    startup = streams if startup_seed is None else Streams(startup_seed)
    bootstrap = train_initial_models(market, cfg, startup, registry, plan, checkpoints)
    for lineage in registry.lineages():
        writer.append("model_releases", registry.log_rows(registry.latest(lineage)))
    rc = cfg.releases
    log = TrainingLog(rc.train_window_s, rc.train_max_rows, keep_s=rc.train_window_s + rc.label_wait_s,
                      seed=streams.seed)
    desk = (CampaignDesk(cfg, market.advertisers, market.users, writer, arm_cfgs) if serving
            else None)
    arms: list[ReleasedArm] = []
    for code, (name, acfg) in enumerate(arm_cfgs.items()):
        l1, l2 = registry.latest(f"{name}/l1"), registry.latest(f"{name}/l2").ranker
        if desk is None:
            arms.append(ReleasedArm(
                name=name, code=code, cfg=acfg, family=l1.family, l1_lineage=f"{name}/l1",
                l2_lineage=f"{name}/l2", query_model=l1.tower, query_version=1, l2=l2))
            continue
        arms.append(Arm(
            name=name, code=code, cfg=acfg, family=l1.family, l1_lineage=f"{name}/l1",
            l2_lineage=f"{name}/l2", query_model=l1.tower, query_version=1, l2=l2,
            budgets=desk.by_arm[name],
            query_cache=QueryCache.empty(market.users.n, acfg.models.embedding_dim + 1),
            features=FeatureRegistry.from_config(acfg.features)))
    lifecycle = Lifecycle(cfg, market, registry, log, arms, extra, streams, writer, checkpoints)
    world = World(cfg=cfg, threads=threads, streams=streams, market=market, registry=registry,
                  checkpoints=checkpoints, arm_cfgs=arm_cfgs, sweep_lineages=sweep,
                  extra_lineages=extra, bootstrap=bootstrap, training_log=log, arms=arms,
                  lifecycle=lifecycle)
    if desk is not None:
        served = [a for a in arms if isinstance(a, Arm)]
        contexts = reference_contexts(market, cfg, streams.get("contexts"))
        pipelines = [IndexPipeline(arm, market, arm.cfg, lifecycle.item_tower(arm), contexts,
                                   writer) for arm in served]
        for pipe in pipelines:
            pipe.initial_deploy(0.0)
        world.serving = Serving(desk=desk, arms=served, contexts=contexts, pipelines=pipelines)
    return world

