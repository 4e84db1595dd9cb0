"""The config's groups: one dataclass per group, mirroring the packages of `sim`
(:mod:`sim.config.schema` assembles them into the run's :class:`~sim.config.schema.Config`).

Every field carries its unit in the comment beside it. Bounds are declared in ``metadata`` and
checked in one place (:func:`sim.config.validate.validate`) before a simulation starts; OmegaConf
checks types and unknown keys when the config is composed.

Metadata keys: ``ge`` / ``gt`` / ``le`` (numeric bounds, applied elementwise to lists),
``share`` (value or every element in [0, 1]), ``choices`` (allowed strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def bounded(default: Any, **meta: Any) -> Any:
    """A dataclass field with a default and validation metadata."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


OBJECTIVES = ("ocpm", "cpc", "cpm")
L1_FAMILIES = ("simple", "dhen")  # the built-in L1 families; others by import path (sim.plugins)
# ad feature families, in column order (sim.world.catalog), and the artifacts of the registry
FEATURE_FAMILIES = ("base", "targeting", "offsite_conversions", "annotations", "image_embedding")
ARTIFACTS = ("training_logs", "l2_feature_store", "l1_embedding")
PRICING_RULES = ("gsp", "second_price", "first_price", "vcg")
LR_SCHEDULES = ("constant", "cosine")
SERVING_DTYPES = ("fp32", "bf16", "fp16", "int8")  # sim.serving.precision
DELAY_KINDS = ("exponential", "lognormal")  # sim.world.delay


@dataclass
class WorldConfig:
    """The ground-truth marketplace (``sim.world``)."""

    # the seed of the marketplace's own draws: users, advertisers and their budgets, feature maps,
    # the initial catalogue, the response constants, the offsite counters' draws (at the start and
    # through the run; sim.world.marketplace); null: the run's ``seed``. Set, the run's seed still
    # draws traffic, outcomes, the exploration log, every model's training, and the ads that
    # replace expired ones and their feature refreshes: one marketplace, many runs
    market_seed: int | None = bounded(None, ge=0)
    latent_dim: int = bounded(8, ge=1)  # dimension of user and ad latent vectors
    n_users: int = bounded(20_000, ge=1)
    n_segments: int = bounded(8, ge=1)
    surfaces: list[str] = bounded(["home_feed", "search", "shopping"])
    surface_mix: list[float] = bounded([0.5, 0.3, 0.2], share=True)  # request share per surface
    surface_ctr_shift: list[float] = bounded([0.0, 0.3, 0.1])  # logit shift of true pCTR
    surface_cvr_shift: list[float] = bounded([0.0, 0.2, 0.6])  # logit shift of true pCVR
    n_advertisers: int = bounded(200, ge=1)
    ads_per_advertiser: int = bounded(10, ge=1)  # live ads per advertiser at any time
    objective_mix: dict[str, float] = bounded({"ocpm": 0.5, "cpc": 0.3, "cpm": 0.2}, share=True)
    target_cpa_mean: float = bounded(4.0, gt=0)  # currency per conversion (ocpm)
    max_cpc_mean: float = bounded(1.0, gt=0)  # currency per click (cpc)
    cpm_price_mean: float = bounded(100.0, gt=0)  # currency per 1000 impressions (cpm)
    bid_sigma: float = bounded(0.3, ge=0)  # lognormal spread of bids across advertisers
    daily_budget_mean: float = bounded(400.0, gt=0)  # currency per day
    budget_sigma: float = bounded(0.8, ge=0)  # lognormal spread of budgets
    # correlation of each advertiser's log budget with its log target CPA draw (which only oCPM
    # campaigns bid with; AuctionNet's generator: about -0.97, the campaigns with the larger
    # budgets ask the lower CPA); 0: drawn independently, as before the knob
    budget_target_corr: float = bounded(0.0, ge=-1, le=1)
    base_ctr_logit: float = -3.8
    base_cvr_logit: float = -3.2
    ctr_affinity: float = bounded(1.2, ge=0)  # weight of user-ad affinity in true pCTR logit
    cvr_affinity: float = bounded(0.6, ge=0)  # weight of user-ad affinity in true pCVR logit
    creative_sigma: float = bounded(0.4, ge=0)  # spread of per-ad CTR quality (logit)
    quality_sigma: float = bounded(0.6, ge=0)  # spread of per-ad latent conversion quality
    feature_noise: float = bounded(0.5, ge=0)  # noise of observable views of latent state
    position_ctr: list[float] = bounded([1.0, 0.75, 0.55], gt=0, le=1)  # true CTR factor by slot
    ad_lifetime_days: float = bounded(7.0, gt=0)  # mean lifetime of an ad (exponential)
    churn_interval_s: float = bounded(3600.0, gt=0)  # how often expired ads are replaced
    feature_refresh_per_day: float = bounded(0.2, ge=0)  # share of live ads whose features change
    # click-to-conversion delay (sim.world.delay): exponential with this mean, or a mixture of
    # lognormals, component k of weight conversion_delay_weights[k], median
    # conversion_delay_medians_s[k] and shape conversion_delay_sigmas[k] (heavy-tailed)
    conversion_delay: str = bounded("exponential", choices=DELAY_KINDS)
    conversion_delay_mean_s: float = bounded(6 * 3600.0, ge=0)
    conversion_delay_weights: list[float] = bounded([], share=True)
    conversion_delay_medians_s: list[float] = bounded([], gt=0)
    conversion_delay_sigmas: list[float] = bounded([], gt=0)
    # offsite conversion visit counters (sim.world.offsite): organic visits per day of an ad of
    # conversion quality 0, and how often the counters are recomputed (the feature job)
    offsite_organic_per_day: float = bounded(2.0, ge=0)
    offsite_refresh_interval_s: float = bounded(86_400.0, gt=0)
    attribution_window_s: float = bounded(86_400.0, ge=0)  # conversions later than this are lost
    # bots (sim.world.users): a share of users that request bot_activity times as often as their
    # drawn activity, click more (logit + bot_ctr_shift) and convert less (logit + bot_cvr_shift).
    # With bots, every user's features carry one more column, the user's log request rate (the
    # behaviour a bot filter reads). 0: no bots, and the user features are as without the knob
    bot_share: float = bounded(0.0, share=True)
    bot_activity: float = bounded(100.0, gt=0)
    # what that feature column carries: the log request rate itself ("rate"), or an upstream
    # heuristic's flag ("flag"): 1 where the observed rate is more than bot_flag_rate times the
    # median user's, else 0
    bot_signal: str = bounded("rate", choices=("rate", "flag"))
    bot_flag_rate: float = bounded(20.0, gt=1)
    bot_ctr_shift: float = 2.0
    bot_cvr_shift: float = -6.0


@dataclass
class TrafficConfig:
    """Request arrivals (``sim.world.traffic``)."""

    requests_per_day: float = bounded(150_000.0, gt=0)  # mean requests per simulated day
    tick_s: float = bounded(300.0, gt=0)  # one batch of requests per tick, seconds
    diurnal_amplitude: float = bounded(0.5, ge=0, le=1)  # relative swing of the arrival rate
    peak_hour: float = bounded(20.0, ge=0, le=24)  # hour of day of the peak rate
    # the day's shape as 24 hourly shares of its requests (summing to 1), the rate constant
    # within each hour; empty: the cosine of diurnal_amplitude and peak_hour
    hourly_shares: list[float] = bounded([], share=True)
    user_activity_sigma: float = bounded(1.0, ge=0)  # lognormal spread of per-user activity


@dataclass
class FunnelConfig:
    """Retrieval -> L1 -> L2 sizes and the ANN index (``sim.serving``)."""

    k_retrieval: int = bounded(200, ge=1)  # candidates retrieved from the index per request
    k_l1: int = bounded(50, ge=1)  # candidates kept by L1
    k_l2: int = bounded(10, ge=1)  # candidates kept by L2 and sent to the auction
    ctr_prior_contexts: int = bounded(64, ge=1)  # reference contexts for the per-ad L1 pCTR prior


BUILD_MODES = ("streaming", "batch", "hybrid")


@dataclass
class IndexConfig:
    """The item-embedding pipeline: enrichment, snapshots, the two index tiers
    (``sim.serving.pipeline``).

    ``large`` holds the whole catalog as of its snapshot; ``fresh`` holds the ads created or
    changed since the snapshot of the deployed ``large`` build. A tier build starts every
    ``*_build_interval_s`` from the latest snapshot and is swapped in ``*_deploy_s`` later.
    ``build_mode``: ``streaming`` (both tiers from the snapshot's stored vectors, mixed versions),
    ``batch`` (each build re-embeds its items with the item tower live at build start, one
    version per build), ``hybrid`` (batch ``large``, streaming ``fresh``).
    """

    factory: str = "Flat"  # faiss index_factory string (inner-product metric)
    # lists an IVF index (e.g. factory "IVF1024,Flat") searches per query; ignored by other indexes
    nprobe: int = bounded(1, ge=1)
    # candidates an HNSW index (e.g. factory "HNSW32") keeps while it searches (faiss's efSearch,
    # its default; faiss does not raise it to k_retrieval); ignored by other indexes
    ef_search: int = bounded(16, ge=1)
    build_mode: str = bounded("streaming", choices=BUILD_MODES)
    enrich_interval_s: float = bounded(600.0, gt=0)  # streaming enrichment of new/changed ads
    snapshot_interval_s: float = bounded(3600.0, gt=0)  # embedding-table snapshot cadence
    fresh_build_interval_s: float = bounded(3600.0, gt=0)
    fresh_deploy_s: float = bounded(0.0, ge=0)  # build + deploy time of a fresh-tier build
    large_build_interval_s: float = bounded(86_400.0, gt=0)
    large_deploy_s: float = bounded(86_400.0, ge=0)  # build + deploy time of a large-tier build


@dataclass
class AutobidConfig:
    """The oCPM autobidder that holds each campaign's CPA at its target (``sim.autobidding``)."""

    enabled: bool = False
    max_multiplier: float = bounded(1.5, ge=1)  # cap of the oCPM bid multiplier (and its pacing)
    gain: float = bounded(0.02, gt=0)  # log multiplier change per interval at a full error
    window_s: float = bounded(86_400.0, gt=0)  # spend and conversions watched, seconds
    # matured spend worth this many conversions at target gives a full step; less, a step
    # scaled by sqrt(expected / conversions_ref)
    conversions_ref: float = bounded(20.0, gt=0)


@dataclass
class BiddingConfig:
    """How bids are formed from each objective (``sim.bidding``)."""

    # multiplies every bid before pacing: an autobidder's aggressiveness (1 = bid the value)
    bid_scale: float = bounded(1.0, gt=0)
    autobid: AutobidConfig = field(default_factory=AutobidConfig)


LATENCY_STAGES = ("query_tower", "item_lookup", "l2")


@dataclass
class LatencyConfig:
    """Per-request serving latency, SLAs and timeouts (``sim.serving.latency``)."""

    enabled: bool = True  # False: latencies are drawn and reported, but nothing times out
    overhead_ms: dict[str, float] = bounded(
        {"query_tower": 2.0, "item_lookup": 1.5, "l2": 3.0}, ge=0)  # fixed cost per request
    # milliseconds per million multiply-adds of each stage: the simulator's models stand in for
    # production models far larger, so these are set to land medians at realistic milliseconds
    ms_per_mflop: dict[str, float] = bounded(
        {"query_tower": 400.0, "item_lookup": 20.0, "l2": 20.0}, ge=0)
    # the fleet's load at which the compute term is as stated: a rate of requests per second
    # (all arms) each bringing these MFLOPs per stage; by default the default world's (512
    # requests per 300 s of its simple tower, exact index over its catalog and L2)
    reference_rate: float = bounded(512 / 300, gt=0)
    reference_mflops: dict[str, float] = bounded(
        {"query_tower": 0.012672, "item_lookup": 0.0877, "l2": 0.7872}, gt=0)
    load_exponent: float = bounded(0.3, ge=0)  # how the compute term grows with the load
    sigma: float = bounded(0.35, ge=0)  # lognormal spread of a request's latency
    sla_ms: dict[str, float] = bounded(
        {"query_tower": 20.0, "item_lookup": 25.0, "l2": 60.0}, gt=0)  # timeout per stage
    # time of a multiply-add in each serving dtype relative to fp32 (the query tower's charge):
    # by default the bytes of a weight, as on hardware with native bf16/fp16/int8 units where a
    # small tower is bound by memory; set 1.0 everywhere for hardware without them
    dtype_cost: dict[str, float] = bounded(
        {"fp32": 1.0, "bf16": 0.5, "fp16": 0.5, "int8": 0.25}, gt=0)


@dataclass
class ServingConfig:
    """The serving path's precision (``sim.serving.precision``) and the probe that measures it
    against the exact fp32 offline path (``sim.serving.probe``). The index's storage and search
    are ``index.factory`` and ``index.nprobe``; presets of all three are the ``serving`` group
    (``conf/serving/``)."""

    query_dtype: str = bounded("fp32", choices=SERVING_DTYPES)  # the query tower at serving
    item_dtype: str = bounded("fp32", choices=SERVING_DTYPES)  # the item tower at enrichment/builds
    # requests of each arm probed per simulated hour (the first of each tick's batch): their
    # served retrieval and L1 logits are compared with the exact fp32 path's
    probe_requests_per_hour: int = bounded(60, ge=1)


@dataclass
class AuctionConfig:
    """The auction (``sim.auction``)."""

    rule: str = bounded("gsp", choices=PRICING_RULES)
    n_slots: int = bounded(3, ge=1)
    reserve: float = bounded(0.002, ge=0)  # minimum eCPM score, currency per impression
    slot_ctr: list[float] = bounded([1.0, 0.75, 0.55], gt=0, le=1)  # platform's slot CTR belief


OPENINGS = ("forecast", "ceiling")


@dataclass
class PacingConfig:
    """The per-advertiser pacing controller (``sim.pacing``)."""

    enabled: bool = True
    interval_s: float = bounded(900.0, gt=0)  # seconds between multiplier updates
    # step of the dual descent: log multiplier change per interval's budget of overspend
    gain: float = bounded(0.5, gt=0)
    # auctions per interval from which an advertiser takes the full step; fewer take a step
    # scaled by sqrt(auctions / auctions_ref) (sim.pacing.step_weight)
    auctions_ref: float = bounded(30.0, gt=0)
    # fixed-price (cpm) bidders are paced by a participation rate, not a bid multiplier
    throttle_fixed_price: bool = True
    # floor of a throttled advertiser's participation rate: a fixed-price bid far above the
    # market with a small budget must take part in a tiny share of the requests
    min_participation: float = bounded(1e-4, gt=0, le=1)
    min_multiplier: float = bounded(0.01, gt=0, le=1)
    max_multiplier: float = bounded(1.0, gt=0, le=1)
    # where the first day's multipliers start (sim.opening): `ceiling`, every campaign at
    # max_multiplier (the controller brings it down during the day: a burst, then a wait, for a
    # campaign far above the clearing price); `forecast`, the desk's controller run on a sample
    # of the first day's requests through the funnel as the traffic starts (the market presets'
    # opening; not the default world's: it moves every world's first day, and the lessons'
    # figures and the diagnosis benchmark's rates are measured at the ceiling)
    opening: str = bounded("ceiling", choices=OPENINGS)
    opening_requests: int = bounded(2_000, ge=1)  # the forecast's sample (of the rest of the day)
    opening_rounds: int = bounded(16, ge=1)  # controller steps on it, each bounded as live


@dataclass
class ModelsConfig:
    """The models' architecture: the L1 two-tower family and the L2 ranker (``sim.models``)."""

    # `simple`, `dhen`, or the import path `package.module:Class` of a TwoTowerBase subclass
    # (sim.models.families: the protocol a family follows)
    l1_family: str = "simple"
    embedding_dim: int = bounded(16, ge=1)  # two-tower output dimension (before the bias slot)
    l1_hidden: int = bounded(64, ge=1)  # simple: hidden width of each tower
    dhen_layers: int = bounded(1, ge=1)  # dhen: ensemble layers per tower
    dhen_token_dim: int = bounded(16, ge=2)  # dhen: width of each feature-family token
    dhen_heads: int = bounded(1, ge=1)  # dhen: attention heads (must divide dhen_token_dim)
    dhen_layer_norm: bool = True  # dhen: LayerNorm after each ensemble layer's residual
    l2_hidden: int = bounded(64, ge=1)
    # ad feature families the L1 item tower consumes (the rest it never sees, zero after
    # standardisation); a model leans on a family only if it is here and in the training logs
    l1_features: list[str] = bounded(list(FEATURE_FAMILIES), choices=FEATURE_FAMILIES)
    # user tokens the L1 query tower consumes (the rest are zero after standardisation); the
    # request rate is a user feature only in a world with bots (world.bot_share)
    l1_user_features: list[str] = bounded(["latent", "segment", "request_rate"],
                                          choices=("latent", "segment", "request_rate"))


@dataclass
class TrainingConfig:
    """Start-up training on the exploration log, and the optimiser of every fit
    (``sim.models.bootstrap``, ``sim.models.training``)."""

    exploration_requests: int = bounded(60_000, ge=1)  # randomised-serving warm-up requests
    # the seed of the start-up: the exploration log (which users and ads fill it, which of its
    # impressions click and convert, which rows are kept) and the start-up models' own draws
    # (initialisation, training batches). Null: the run's `seed`. Set, every run seed starts from
    # the same platform (the same log and models, as a real platform's experiments start from the
    # models it serves), and `seed` draws the live run alone (sim.models.bootstrap)
    startup_seed: int | None = bounded(None, ge=0)
    # share of the exploration log's unclicked impressions and unshown pairs kept (every click
    # is kept), with L2's click logit trained offset by -log of it so pCTR stays calibrated:
    # a long log (the tens of conversions a short one holds at real rates train a CVR head that
    # picks advertisers by chance) at the rows of a short one (sim.models.bootstrap)
    exploration_negative_rate: float = bounded(1.0, gt=0, le=1)
    distill_ads_per_request: int = bounded(4, ge=1)  # random ads per request for L1 distillation
    label_weight: float = bounded(1.0, ge=0)  # weight of conversion labels next to L2 teacher
    # share of clicked, non-converting impressions kept for L2's pCVR head (negative
    # downsampling, with no recalibration afterwards: below 1 the ranker over-predicts pCVR, its
    # odds by about 1 / rate; sim.models.fitting.fit_l2)
    cvr_negative_rate: float = bounded(1.0, gt=0, le=1)
    learning_rate: float = bounded(3e-3, gt=0)  # start-up training (releases: releases.*)
    epochs: int = bounded(3, ge=1)
    batch_size: int = bounded(4096, ge=1)
    # the learning rate over each fit's steps (start-up and every release): a half cosine from
    # the rate down to 0, or constant (the older schedule). A fit that ends at the full rate stops
    # wherever the last steps threw it: at one seed, last-bit changes moved the headline's
    # offline log_mae change by up to 12 points with a constant rate, by 3.4 at most with the cosine
    # (scenarios/l1_cvr_discrepancy.md, "Training noise")
    lr_schedule: str = bounded("cosine", choices=LR_SCHEDULES)
    # stop a fit (start-up and every release) once its loss on a held-out share of its rows
    # stops improving, after at most ``epochs`` (releases: ``releases.epochs``), and keep the
    # best epoch's weights. The learning-rate schedule still spans every epoch, so a fit that
    # stops early ends above the schedule's floor. Off by default: every fit runs its epochs and
    # trains on all its rows (sim.models.training)
    early_stopping: bool = False
    holdout_share: float = bounded(0.1, gt=0, le=0.5)  # the rows held out, drawn per fit
    patience: int = bounded(0, ge=0)  # epochs without improvement before the fit stops
    min_improvement: float = bounded(0.0, ge=0)  # relative fall of the holdout loss that counts


@dataclass
class ReleasesConfig:
    """The release cadence: warm-started retraining on the logs, and the rollout of the query
    tower (``sim.lifecycle``)."""

    interval_s: float = bounded(86_400.0, gt=0)  # a new version of every live model
    epochs: int = bounded(2, ge=1)  # warm-start epochs per release
    learning_rate: float = bounded(3e-3, gt=0)
    reinit_share: float = bounded(0.0, share=True)  # share of layers re-initialised per release
    train_window_s: float = bounded(86_400.0, gt=0)  # log window a release trains on
    label_wait_s: float = bounded(43_200.0, ge=0)  # the window ends this long before the release
    train_max_rows: int = bounded(1_500_000, ge=1)  # cap on the logged rows kept for training
    train_sample_rows: int = bounded(300_000, ge=1)  # rows a release samples from its window
    query_rollout_delay_s: float = bounded(3600.0, ge=0)  # release -> query tower live
    # a model-versioning bug: the serving pointer names the version this many releases behind the
    # newest, for both towers (query rollouts and the item tower enrichment and builds use), while
    # offline evaluation and the readiness check read the newest (0: no bug)
    pointer_lag: int = bounded(0, ge=0)


@dataclass
class ReadinessConfig:
    """The version-skew sensitivity sweep and the readiness gate (``sim.evaluation``)."""

    # families the skew sweep checks; each one no arm serves is trained as a readiness lineage
    # beside the live models (empty: the families the arms serve)
    families: list[str] = field(default_factory=list)  # names or import paths, as models.l1_family
    max_distance: int = bounded(4, ge=0)  # item versions older than the query, in the sweep
    gate_distance: int = bounded(2, ge=1)  # the readiness gate looks at this distance
    gate_max_increase: float = bounded(0.25, ge=0)  # max relative loss increase to pass


@dataclass
class EvaluationConfig:
    """Offline evaluation after the run (``sim.evaluation``)."""

    rows: int = bounded(50_000, ge=1)  # rows per log source in offline evaluation
    # a bot filter on the evaluation's rows: drop the rows of users whose observed request rate
    # (the user feature a world with bots has) is more than this many times the median user's;
    # 0: no filter
    bot_filter_rate: float = bounded(0.0, ge=0)


@dataclass
class ThreadsConfig:
    """Threads of the run's torch and faiss kernels (the whole process, both arms): a number, or
    ``auto`` for the cores this job may use (``sim.threads``: all of them for a single run, a
    share of them for a job of a parallel sweep, the CPUs of a Ray task)."""

    torch: str = "auto"  # "auto" or a number >= 1
    faiss: str = "auto"
    # the same bits at 1 and 2 threads (sim.threads); needs MKL_CBWR=AUTO,STRICT in the
    # environment. Off by default: it moves every figure by up to a few percent, and the lessons
    # state figures measured without it
    deterministic: bool = False


@dataclass
class CacheConfig:
    """The shared directory of trained checkpoints (``sim.models.checkpoints``). Within a run a
    model trained from the same inputs is always trained once; with ``dir`` set, checkpoints are
    also kept there and reused by later runs (ground-truth and attribution worlds, sweeps)."""

    dir: str | None = None  # a directory path; None: within the run only
    max_mb: float = bounded(2000.0, gt=0)  # the directory is trimmed to this, least recently used first


@dataclass
class LogsConfig:
    """Log sampling and parquet writing (``sim.logs``)."""

    full_request_rate: float = bounded(0.01, share=True)  # requests logged with every candidate
    partial_request_rate: float = bounded(0.05, share=True)  # requests logged with a subset
    partial_candidates: int = bounded(10, ge=1)  # candidates per partial-request sample
    flush_rows: int = bounded(250_000, ge=1)  # rows buffered per table before a part is written
    # write the training logs releases read (table ``training_rows``; every appended row, before
    # the log thins past releases.train_max_rows): what ``python -m sim.readiness --run``
    # replays; ~22 bytes a row on disk, off by default
    training_rows: bool = False


@dataclass
class FeatureChange:
    """A scheduled change to the feature registry at simulated ``day`` (``sim.features``):
    families onboarded to (``onboard``) or removed from (``offboard``) artifacts, and optionally
    a new value of ``l2_implies_l1``."""

    day: float = bounded(0.0, ge=0)
    onboard: dict[str, list[str]] = field(default_factory=dict)  # family -> artifacts
    offboard: dict[str, list[str]] = field(default_factory=dict)
    l2_implies_l1: bool | None = None


@dataclass
class FeaturesConfig:
    """The feature registry (``sim.features``): which serving artifacts each ad feature family is
    onboarded to. A family missing from an artifact is filled with the serving default (0) there:
    ``training_logs`` (what models train and are evaluated on), ``l2_feature_store`` (what L2
    scores with, live), ``l1_embedding`` (what the item tower embeds into the index)."""

    onboarding: dict[str, list[str]] = field(default_factory=lambda: {
        f: list(ARTIFACTS) for f in FEATURE_FAMILIES})
    # every family onboarded for the L2 store is also considered for the L1 embedding path
    l2_implies_l1: bool = False
    changes: list[FeatureChange] = field(default_factory=list)
    # label leakage: the share of converted rows whose offsite conversion counters the training
    # pipeline reads when it joins the label, so they count the row's own conversion
    # (sim.models.label_join); releases, start-up training and the offline evaluation read the
    # rows so joined, serving reads the counters as of the request. 0: no leak
    label_join_share: float = bounded(0.0, share=True)
