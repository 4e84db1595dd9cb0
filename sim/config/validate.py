"""Range and consistency checks on a composed config, run before any simulation starts.

OmegaConf already rejects unknown keys and values of the wrong type when the config is composed.
This module checks what types cannot say: bounds declared in each field's ``metadata`` and the
relations between fields. Every message names the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import faiss
import torch

from sim.ann import empty_index
from sim.clock import DAY_S
from sim.config.schema import (
    ARTIFACTS,
    FEATURE_FAMILIES,
    L1_FAMILIES,
    LATENCY_STAGES,
    OBJECTIVES,
    SERVING_DTYPES,
    Config,
    set_keys,
)
from sim.plugins import load_object


class ConfigError(ValueError):
    """A config value is out of range or inconsistent; the message names the key and value."""


def _check_value(key: str, value: Any, meta: dict[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"`{key}` must be one of {list(meta['choices'])}, got {value!r}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"`{key}` must be finite, got {value!r}")
    if "ge" in meta and value < meta["ge"]:
        raise ConfigError(f"`{key}` must be >= {meta['ge']}, got {value!r}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"`{key}` must be > {meta['gt']}, got {value!r}")
    if "le" in meta and value > meta["le"]:
        raise ConfigError(f"`{key}` must be <= {meta['le']}, got {value!r}")
    if meta.get("share") and not 0.0 <= value <= 1.0:
        raise ConfigError(f"`{key}` must be a share in [0, 1], got {value!r}")


def _walk(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _walk(value, key + ".")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v):  # e.g. ramp steps, feature changes
                    _walk(v, f"{key}[{i}].")
                else:
                    _check_value(f"{key}[{i}]", v, dict(f.metadata))
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_value(f"{key}.{k}", v, dict(f.metadata))
        else:
            _check_value(key, value, dict(f.metadata))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_relations(cfg: Config) -> None:
    w, fun, auc, pac = cfg.world, cfg.funnel, cfg.auction, cfg.pacing
    n_surf = len(w.surfaces)
    _require(n_surf >= 1, f"`world.surfaces` must name at least one surface, got {w.surfaces}")
    for name in ("surface_mix", "surface_ctr_shift", "surface_cvr_shift"):
        values = getattr(w, name)
        _require(
            len(values) == n_surf,
            f"`world.{name}` must have one entry per surface ({n_surf}), got {values}",
        )
    _require(
        abs(sum(w.surface_mix) - 1.0) < 1e-6,
        f"`world.surface_mix` must sum to 1, got {w.surface_mix} (sum {sum(w.surface_mix)})",
    )
    bot_defaults = {f.name: f.default for f in dataclasses.fields(w)
                    if f.name in ("bot_signal", "bot_flag_rate")}
    moved = {k: getattr(w, k) for k, v in bot_defaults.items() if getattr(w, k) != v}
    _require(w.bot_share > 0 or not moved,
             f"{sorted(moved)} describe the bots' feature, but the world has none "
             f"(`world.bot_share` 0): got {moved}")
    _require(w.bot_signal == "flag" or w.bot_flag_rate == bot_defaults["bot_flag_rate"],
             f"`world.bot_flag_rate` ({w.bot_flag_rate}) is read only with "
             f"`world.bot_signal=flag`, got {w.bot_signal!r}")
    _require(cfg.evaluation.bot_filter_rate == 0 or cfg.evaluation.bot_filter_rate > 1,
             f"`evaluation.bot_filter_rate` is a multiple of the median user's request rate above "
             f"which a user's rows are dropped: 0 (no filter) or more than 1, got "
             f"{cfg.evaluation.bot_filter_rate}")
    _require(not cfg.evaluation.bot_filter_rate or w.bot_share > 0,
             f"`evaluation.bot_filter_rate` ({cfg.evaluation.bot_filter_rate}) filters on the "
             "users' request-rate feature, which only a world with bots has "
             f"(`world.bot_share` > 0, got {w.bot_share})")
    _require(not w.budget_target_corr or (w.bid_sigma > 0 and w.budget_sigma > 0),
             f"`world.budget_target_corr` ({w.budget_target_corr}) correlates two spreads: it "
             f"needs `world.bid_sigma` ({w.bid_sigma}) and `world.budget_sigma` "
             f"({w.budget_sigma}) above 0")
    tr = cfg.traffic
    if tr.hourly_shares:
        _require(len(tr.hourly_shares) == 24 and abs(sum(tr.hourly_shares) - 1.0) < 1e-6,
                 "`traffic.hourly_shares` must be 24 shares (hours 0-23) summing to 1, got "
                 f"{len(tr.hourly_shares)} summing to {sum(tr.hourly_shares)}")
        cosine = {f.name: f.default for f in dataclasses.fields(tr)
                  if f.name in ("diurnal_amplitude", "peak_hour")}
        set_too = {k: getattr(tr, k) for k, v in cosine.items() if getattr(tr, k) != v}
        _require(not set_too, f"`traffic.hourly_shares` gives the day's shape, so the cosine's "
                 f"{sorted(set_too)} would not be read; leave them at their defaults, got {set_too}")
    lists = {k: getattr(w, f"conversion_delay_{k}") for k in ("weights", "medians_s", "sigmas")}
    if w.conversion_delay == "lognormal":
        _require(len({len(v) for v in lists.values()}) == 1 and lists["weights"],
                 "`world.conversion_delay=lognormal` needs one entry per mixture component in "
                 "each of `world.conversion_delay_weights`, `_medians_s` and `_sigmas`, got "
                 f"{lists}")
        _require(abs(sum(lists["weights"]) - 1.0) < 1e-6,
                 f"`world.conversion_delay_weights` must sum to 1, got {lists['weights']}")
        mean_default = next(f.default for f in dataclasses.fields(w)
                            if f.name == "conversion_delay_mean_s")
        _require(w.conversion_delay_mean_s == mean_default,
                 f"`world.conversion_delay_mean_s` ({w.conversion_delay_mean_s}) is the "
                 "exponential delay's mean, not read by the lognormal mixture; leave it at its "
                 f"default ({mean_default})")
    else:
        _require(not any(lists.values()),
                 f"`world.conversion_delay_weights`, `_medians_s` and `_sigmas` describe a "
                 f"lognormal mixture, but `world.conversion_delay` is {w.conversion_delay!r} "
                 f"(set it to lognormal, or leave them empty), got {lists}")
    unknown = sorted(set(w.objective_mix) - set(OBJECTIVES))
    _require(not unknown, f"`world.objective_mix` has unknown objective(s) {unknown}; "
             f"known: {list(OBJECTIVES)}")
    total = sum(w.objective_mix.values())
    _require(abs(total - 1.0) < 1e-6,
             f"`world.objective_mix` must sum to 1, got {dict(w.objective_mix)} (sum {total})")
    _require(fun.k_l1 <= fun.k_retrieval,
             f"`funnel.k_l1` ({fun.k_l1}) must be <= `funnel.k_retrieval` ({fun.k_retrieval})")
    _require(fun.k_l2 <= fun.k_l1,
             f"`funnel.k_l2` ({fun.k_l2}) must be <= `funnel.k_l1` ({fun.k_l1})")
    _require(auc.n_slots <= fun.k_l2,
             f"`auction.n_slots` ({auc.n_slots}) must be <= `funnel.k_l2` ({fun.k_l2})")
    for name, values in (("auction.slot_ctr", auc.slot_ctr), ("world.position_ctr", w.position_ctr)):
        _require(len(values) >= auc.n_slots,
                 f"`{name}` needs at least `auction.n_slots` ({auc.n_slots}) entries, got {values}")
        _require(all(a >= b for a, b in zip(values, values[1:], strict=False)),
                 f"`{name}` must be non-increasing, got {values}")
    _require(pac.min_multiplier <= pac.max_multiplier,
             f"`pacing.min_multiplier` ({pac.min_multiplier}) must be <= "
             f"`pacing.max_multiplier` ({pac.max_multiplier})")
    _require(cfg.experiment.arms[:1] == ["control"],
             f"`experiment.arms` must start with 'control', got {cfg.experiment.arms}")
    _require(len(set(cfg.experiment.arms)) == len(cfg.experiment.arms),
             f"`experiment.arms` must not repeat an arm, got {cfg.experiment.arms}")
    _require("treatment" in cfg.experiment.arms or not set_keys(cfg.experiment.treatment),
             f"`experiment.treatment` is set ({set_keys(cfg.experiment.treatment)}) but "
             f"`experiment.arms` has no treatment arm (got {cfg.experiment.arms}): the overlay "
             f"would be ignored; add the arm, or set each of those keys to null (as the control: "
             f"`experiment.treatment.models.l1_family=null`)")
    _require(pac.interval_s % cfg.traffic.tick_s == 0,
             f"`pacing.interval_s` ({pac.interval_s}) must be a multiple of `traffic.tick_s` "
             f"({cfg.traffic.tick_s}): the controller compares whole ticks of spend")
    ramp = cfg.experiment.ramp
    _require(len(ramp) >= 1, "`experiment.ramp` needs at least one step")
    _require(all(a.day < b.day for a, b in zip(ramp, ramp[1:], strict=False)),
             f"`experiment.ramp` days must increase, got {[r.day for r in ramp]}")
    _require(all(a.share <= b.share for a, b in zip(ramp, ramp[1:], strict=False)),
             f"`experiment.ramp` shares must not decrease, got {[r.share for r in ramp]}")
    _require(not cfg.experiment.exposure_twin or (
        len(cfg.experiment.arms) == 2 and ramp[0].share > 0
        and any(r.share > ramp[0].share and r.day < cfg.days for r in ramp)),
        "`experiment.exposure_twin` needs two arms and a ramp whose share grows from above 0 "
        f"within the run's {cfg.days:g} days, got arms {cfg.experiment.arms}, ramp days "
        f"{[r.day for r in ramp]} and shares {[r.share for r in ramp]}")
    for name in ("overhead_ms", "ms_per_mflop", "reference_mflops", "sla_ms"):
        keys = getattr(cfg.latency, name)
        _require(set(keys) == set(LATENCY_STAGES),
                 f"`latency.{name}` must give exactly the stages {list(LATENCY_STAGES)}, "
                 f"got {sorted(keys)}")
    m = cfg.models
    _require(m.dhen_token_dim % m.dhen_heads == 0,
             f"`models.dhen_heads` ({m.dhen_heads}) must divide `models.dhen_token_dim` "
             f"({m.dhen_token_dim})")
    for name in ("torch", "faiss"):
        value = getattr(cfg.threads, name)
        _require(value == "auto" or (value.isdigit() and int(value) >= 1),
                 f"`threads.{name}` must be `auto` or a number >= 1, got {value!r}")
    r = cfg.readiness
    _require(r.gate_distance <= r.max_distance,
             f"`readiness.gate_distance` ({r.gate_distance}) must be <= "
             f"`readiness.max_distance` ({r.max_distance})")
    for name in ("tick_s",):
        value = getattr(cfg.traffic, name)
        _require(DAY_S % value == 0, f"`traffic.{name}` must divide a day (86400 s), got {value}")
    _require(DAY_S % pac.interval_s == 0,
             f"`pacing.interval_s` must divide a day (86400 s), got {pac.interval_s}")
    n_ads = w.n_advertisers * w.ads_per_advertiser
    _require(fun.k_retrieval <= n_ads,
             f"`funnel.k_retrieval` ({fun.k_retrieval}) must be <= the live catalog "
             f"(world.n_advertisers x world.ads_per_advertiser = {n_ads})")


def _check_onboarding(key: str, table: dict[str, list[str]]) -> None:
    for family, arts in table.items():
        _require(family in FEATURE_FAMILIES, f"`{key}` has unknown feature family {family!r}; "
                 f"known: {list(FEATURE_FAMILIES)}")
        bad = sorted(set(arts) - set(ARTIFACTS))
        _require(not bad, f"`{key}.{family}` has unknown artifact(s) {bad}; known: {list(ARTIFACTS)}")


def _check_features(cfg: Config) -> None:
    fc = cfg.features
    _check_onboarding("features.onboarding", fc.onboarding)
    for i, change in enumerate(fc.changes):
        _check_onboarding(f"features.changes[{i}].onboard", change.onboard)
        _check_onboarding(f"features.changes[{i}].offboard", change.offboard)
    days = [c.day for c in fc.changes]
    _require(days == sorted(days), f"`features.changes` days must not decrease, got {days}")


def _check_index(cfg: Config) -> None:
    """The faiss factory string must build an index of the vectors it will hold: the towers'
    output plus the bias slot, ``models.embedding_dim + 1`` wide, with the inner-product metric;
    an IVF index one wider, on L2 (the norm padding of :func:`sim.ann.empty_index`). faiss would
    otherwise fail at the first build, mid-run (a product quantizer whose sub-vectors do not
    divide the dimension, say). An IVF index must not be asked to probe more lists than it has."""
    d = cfg.models.embedding_dim + 1
    try:
        empty = empty_index(cfg.index.factory, d)
    except RuntimeError as e:
        msg = str(e).strip()
        reason = (msg.splitlines() or [""])[-1].rsplit(": ", 1)[-1]  # faiss's own sentence
        raise ConfigError(
            f"`index.factory` {cfg.index.factory!r} cannot index the {d}-dimensional vectors of "
            f"`models.embedding_dim`={cfg.models.embedding_dim} plus the bias slot, nor (as an IVF "
            f"index) the {d + 1} of the norm padding (faiss: {reason}; e.g. 'Flat', 'SQ8', "
            f"'RR24,PQ8', 'IVF64,Flat', 'IVF64,PQ6', 'HNSW32')") from None
    ivf = faiss.try_extract_index_ivf(empty.index)
    if ivf is not None:
        _require(cfg.index.nprobe <= ivf.nlist,
                 f"`index.nprobe` ({cfg.index.nprobe}) must be <= the {ivf.nlist} lists of "
                 f"`index.factory` {cfg.index.factory!r}")


# what an L1 family must define (sim.models.towers.TwoTowerBase; checked as a subclass when built)
FAMILY_ATTRS = ("from_config", "query_mflops", "query_vectors", "item_vectors")


def _check_family(key: str, name: str) -> None:
    """A built-in L1 family, or an import path to a class with the family protocol."""
    if name in L1_FAMILIES:
        return
    if ":" not in name:
        raise ConfigError(f"`{key}` must be one of {list(L1_FAMILIES)} or an import path "
                          f"'package.module:Class' of an L1 family, got {name!r}")
    try:
        obj = load_object(name, key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    missing = [a for a in FAMILY_ATTRS if not hasattr(obj, a)]
    _require(isinstance(obj, type) and not missing,
             f"`{key}` {name!r} is not an L1 family class (a subclass of "
             f"sim.models.towers.TwoTowerBase); missing {missing or 'a class'}")


def _check_serving(cfg: Config) -> None:
    """Each serving dtype must run on this machine's torch (a one-layer forward in it), and
    ``latency.dtype_cost`` must price every dtype."""
    costs = cfg.latency.dtype_cost
    _require(set(costs) == set(SERVING_DTYPES),
             f"`latency.dtype_cost` must give exactly the dtypes {list(SERVING_DTYPES)}, "
             f"got {sorted(costs)}")
    for key in ("query_dtype", "item_dtype"):
        dtype = getattr(cfg.serving, key)
        if dtype in ("fp32", "int8"):  # int8 is fp32 arithmetic on rounded values
            continue
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        try:
            torch.nn.Linear(2, 2).to(torch_dtype)(torch.ones(1, 2, dtype=torch_dtype))
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"`serving.{key}` {dtype!r}: this machine's torch "
                              f"{torch.__version__} cannot run it on CPU ({e})") from None


def validate(cfg: Config) -> Config:
    """Check every declared bound and relation of ``cfg``; raise :class:`ConfigError` if any fails."""
    _walk(cfg, "")
    _check_relations(cfg)
    _check_features(cfg)
    _check_index(cfg)
    _check_serving(cfg)
    _check_family("models.l1_family", cfg.models.l1_family)
    for i, name in enumerate(cfg.readiness.families):
        _check_family(f"readiness.families[{i}]", name)
    return cfg
