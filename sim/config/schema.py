"""The run's config: the groups (:mod:`sim.config.groups`) assembled into :class:`Config`, with
the treatment arm's typed overlay.

Every field carries its unit in the comment beside it. Bounds are declared in ``metadata`` and
checked in one place (:func:`sim.config.validate.validate`) before a simulation starts; OmegaConf
checks types and unknown keys when the config is composed.

Metadata keys: ``ge`` / ``gt`` / ``le`` (numeric bounds, applied elementwise to lists),
``share`` (value or every element in [0, 1]), ``choices`` (allowed strings).

**The treatment's config** (``experiment.treatment``) is typed by the schema: :data:`ArmOverlay`
has one section per group an arm may set for itself (:data:`ARM_GROUPS`), each with the group's
keys, and every key defaults to ``None``: "as the control". So
``experiment.treatment.funnel.k_l1=50`` is checked for its type when the config is composed, like
any key, and a key both arms share (``world``, ``traffic``, ``pacing`` ...) is not there to set.
A dict-valued key holds its known entries, each ``None`` until set
(``experiment.treatment.latency.sla_ms.query_tower=12``). :func:`sim.config.overlay.arm_config`
merges what is set into the control's config.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from sim.config.groups import (
    ARTIFACTS,
    BUILD_MODES,
    DELAY_KINDS,
    FEATURE_FAMILIES,
    L1_FAMILIES,
    LATENCY_STAGES,
    LR_SCHEDULES,
    OBJECTIVES,
    PRICING_RULES,
    SERVING_DTYPES,
    AuctionConfig,
    AutobidConfig,
    BiddingConfig,
    CacheConfig,
    EvaluationConfig,
    FeatureChange,
    FeaturesConfig,
    FunnelConfig,
    IndexConfig,
    LatencyConfig,
    LogsConfig,
    ModelsConfig,
    PacingConfig,
    ReadinessConfig,
    ReleasesConfig,
    ServingConfig,
    ThreadsConfig,
    TrafficConfig,
    TrainingConfig,
    WorldConfig,
    bounded,
)

# keys that moved out of ``models`` when it was split into groups that mirror the code: an old
# key fails before the run with its new name (sim.config.store.check_overrides)
MOVED_KEYS = {
    "models.exploration_requests": "training.exploration_requests",
    "models.distill_ads_per_request": "training.distill_ads_per_request",
    "models.label_weight": "training.label_weight",
    "models.learning_rate": "training.learning_rate",
    "models.epochs": "training.epochs",
    "models.batch_size": "training.batch_size",
    "models.release_interval_s": "releases.interval_s",
    "models.release_epochs": "releases.epochs",
    "models.release_learning_rate": "releases.learning_rate",
    "models.reinit_share": "releases.reinit_share",
    "models.train_window_s": "releases.train_window_s",
    "models.label_wait_s": "releases.label_wait_s",
    "models.train_max_rows": "releases.train_max_rows",
    "models.train_sample_rows": "releases.train_sample_rows",
    "models.query_rollout_delay_s": "releases.query_rollout_delay_s",
    "models.skew_check_families": "readiness.families",
    "models.skew_max_distance": "readiness.max_distance",
    "models.skew_gate_distance": "readiness.gate_distance",
    "models.skew_gate_max_increase": "readiness.gate_max_increase",
    "models.offline_eval_rows": "evaluation.rows",
    "models.torch_threads": "threads.torch",
    "models.faiss_threads": "threads.faiss",
}


# the groups an arm sets for itself; every other key is the whole run's (both arms share it)
ARM_GROUPS: dict[str, type] = {
    "funnel": FunnelConfig, "index": IndexConfig, "auction": AuctionConfig,
    "bidding": BiddingConfig, "latency": LatencyConfig, "serving": ServingConfig,
    "models": ModelsConfig, "training": TrainingConfig, "releases": ReleasesConfig,
    "features": FeaturesConfig,
}


def _overlay_of(cls: type) -> type:
    """A dataclass with ``cls``'s keys, each ``None`` by default (not set: as the control); a
    nested group is its own overlay, and a dict's known entries are each ``None``."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = _overlay_of(tp)  # type: ignore[arg-type]
            out.append((f.name, sub, field(default_factory=sub)))
            continue
        default: Any = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                        else f.default)
        if typing.get_origin(tp) is dict and default:
            key, value = typing.get_args(tp)
            entries = dict.fromkeys(default)
            out.append((f.name, dict[key, value | None],  # type: ignore[valid-type]
                        field(default_factory=entries.copy)))
            continue
        out.append((f.name, Optional[tp], field(default=None)))  # noqa: UP045 (built at run time)
    return _importable(dataclasses.make_dataclass(cls.__name__.replace("Config", "Overlay"), out))


def _importable(cls: type) -> type:
    """``cls`` as an attribute of this module, so that pickle finds it by name: a config that holds
    an overlay then crosses to another process (a sweep's joblib or Ray worker) as a reference to
    that process's own class, never as a copy of the class that its schema would reject."""
    name = cls.__name__
    if name in globals():
        raise TypeError(f"two overlay classes named {name}")
    cls.__module__ = __name__
    cls.__qualname__ = name
    globals()[name] = cls
    return cls


if TYPE_CHECKING:
    ArmOverlay = Any
else:
    _SECTIONS = {name: _overlay_of(cls) for name, cls in ARM_GROUPS.items()}
    ArmOverlay = _importable(dataclasses.make_dataclass("ArmOverlay", [
        (name, sub, field(default_factory=sub)) for name, sub in _SECTIONS.items()]))
    ArmOverlay.__doc__ = "The treatment's own keys: each group an arm sets, each key None until set."


def set_keys(overlay: Any) -> dict[str, Any]:
    """What a typed treatment overlay sets: its keys that are not ``None``, as a nested dict (a
    dict's entries likewise; a list is a value). Empty when nothing is set (an A/A test)."""
    return _not_none(dataclasses.asdict(overlay))


def _not_none(node: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            v = _not_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


DESIGNS = ("budget_split", "user_split")
TRAINING_REGIMES = ("pooled", "diverted")


@dataclass
class RampStep:
    """From ``day`` on (simulated days, may be fractional), the treatment gets ``share`` of users."""

    day: float = bounded(0.0, ge=0)
    share: float = bounded(0.5, share=True)


@dataclass
class ExperimentConfig:
    """The experiment (``sim.experiment``).

    ``arms`` is ``[control]`` (no experiment) or ``[control, treatment]``. ``treatment`` holds
    the treatment arm's own keys (:data:`ArmOverlay`: the groups of :data:`ARM_GROUPS`, each key
    ``None`` until set); nothing set is an A/A test. Users are assigned by a hash of their id
    and ``salt``: a user is in treatment while their draw is below the current ramp share, so a
    growing share never moves a user back.
    """

    arms: list[str] = bounded(["control"], choices=("control", "treatment"))
    treatment: ArmOverlay = field(default_factory=ArmOverlay)
    design: str = bounded("budget_split", choices=DESIGNS)
    training: str = bounded("pooled", choices=TRAINING_REGIMES)  # which logs each arm trains on
    salt: str = "adsim"
    ramp: list[RampStep] = field(default_factory=lambda: [RampStep(0.0, 0.5)])
    # also run the same world at 0% and at 100% treatment (common random numbers) and report the
    # true global effect beside the experiment's estimate (metrics.json ``ground_truth``)
    ground_truth: bool = False
    # also run the same world with the treatment's share held at the ramp's first share (common
    # random numbers): the exposure-bias read-out's reference, which separates the share from the
    # day (metrics.json ``exposure_twin``; needs two arms and a ramp whose share grows)
    exposure_twin: bool = False
    # clusters of the delta-method intervals (``sim.stats``): ``user_advertiser`` also counts the
    # shared draw of an advertiser's budget and pacing path; ``user`` alone under-covers budget-split
    ci_clusters: str = bounded("user_advertiser", choices=("user", "user_advertiser"))


@dataclass
class Config:
    """The whole run. The scenario applied (a file in ``scenarios/``) is the Hydra group
    choice ``scenario`` and is recorded in ``manifest.json``."""

    seed: int = bounded(0, ge=0)
    days: float = bounded(2.0, gt=0)  # simulated days of live traffic after the warm-up
    progress: str = bounded("auto", choices=("auto", "on", "off"))
    world: WorldConfig = field(default_factory=WorldConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    funnel: FunnelConfig = field(default_factory=FunnelConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    auction: AuctionConfig = field(default_factory=AuctionConfig)
    bidding: BiddingConfig = field(default_factory=BiddingConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    releases: ReleasesConfig = field(default_factory=ReleasesConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


# the groups are re-exported: the schema is where a config type is found
__all__ = [
    "MOVED_KEYS",
    "ARM_GROUPS",
    "ArmOverlay",
    "set_keys",
    "DESIGNS",
    "TRAINING_REGIMES",
    "RampStep",
    "ExperimentConfig",
    "Config",
    "ARTIFACTS",
    "BUILD_MODES",
    "DELAY_KINDS",
    "FEATURE_FAMILIES",
    "L1_FAMILIES",
    "LATENCY_STAGES",
    "LR_SCHEDULES",
    "OBJECTIVES",
    "PRICING_RULES",
    "SERVING_DTYPES",
    "AuctionConfig",
    "AutobidConfig",
    "BiddingConfig",
    "CacheConfig",
    "EvaluationConfig",
    "FeatureChange",
    "FeaturesConfig",
    "FunnelConfig",
    "IndexConfig",
    "LatencyConfig",
    "LogsConfig",
    "ModelsConfig",
    "PacingConfig",
    "ReadinessConfig",
    "ReleasesConfig",
    "ServingConfig",
    "ThreadsConfig",
    "TrafficConfig",
    "TrainingConfig",
    "WorldConfig",
    "bounded",
]
