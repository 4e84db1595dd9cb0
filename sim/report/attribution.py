"""Attribution: how much of the online/offline gap each hazard caused.

The run's own config (``.hydra/config.yaml``) is re-run with every subset of the hazards present
in it switched off (the run itself is the world with all of them on), with the same seed and
without its ground-truth and exposure twins: the world, the traffic and every response draw are
the same (common random numbers), so two worlds differ only by what the switches change. Each
outcome ``v`` is then split among the hazards by their Shapley values, ``phi_h = sum over S not
containing h of |S|! (n-|S|-1)! / n! * (v(S + h) - v(S))``, which sum to ``v(all on) -
v(all off)``. With n hazards that is 2**n − 1 extra worlds (at most 8 hazards, 255 worlds).

A hazard is *present* when the run's evidence shows it, and *switched off* by an operational fix
a team could make (stated in ``HAZARDS``); a switch changes nothing else of the config:

* ``parity_gap`` (the parity audit lists a family): every family onboarded to every artifact from
  the start, no scheduled changes;
* ``version_skew`` (candidates served at a version distance other than 0): synchronous deploys —
  batch builds, the ``large`` tier built at every release and deployed at once, ``fresh`` deployed
  at once, the query tower rolled out with the release;
* ``exposure_bias`` (two arms, pooled training, releases): diverted training;
* ``timeouts`` (a stage past its SLA on >= 0.1% of an arm's requests): no SLA enforced;
* ``serving_path`` (an arm's probe shows ``ann_recall`` below 0.999 or ``l1_score_error`` of
  0.001 or more): exact fp32 serving, a ``Flat`` index and fp32 towers in every arm;
* ``model_version`` (an impression served by an older L1 than the release log names): the
  serving pointer names the newest version (``releases.pointer_lag`` 0 in every arm);
* ``label_leakage`` (an arm's offline evaluation has a point-in-time view: its pipeline joins a
  counter family at label time): every pipeline reads the features as of each request
  (``features.label_join_share`` 0 in every arm);
* ``outlier_domination`` (a world with bots, ``world.bot_share`` > 0, whose offline evaluation
  filters none): a bot filter on the evaluation's rows (``evaluation.bot_filter_rate``
  :data:`BOT_FILTER`: the rows of users requesting more than 20 times as often as the median
  user are dropped). It moves the offline side of the gap only: serving and the models are
  untouched, as a team that re-scores its offline win without bots would do.

Worlds go to ``RUN_DIR/attribution/<name>/`` (full run directories) and a finished one is reused
when the command is repeated. Ground-truth worlds are not re-run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import math
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import joblib
from omegaconf import OmegaConf

from sim.config.overlay import arm_config, overlay_set
from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES, Config, set_keys
from sim.config.store import to_config
from sim.logs.writer import write_text_atomic
from sim.report.evidence import gap, stratified, two_arms
from sim.report.run_report import ReportError, read_run
from sim.run import run

TIMEOUT_PRESENT = 0.001  # share of requests past an SLA that makes timeouts a present hazard
SERVING_RECALL_PRESENT = 0.999  # an ann_recall below this makes the serving path present ...
SERVING_ERROR_PRESENT = 0.001  # ... as does a mean |L1 logit error| of this much


def load_run_config(run_dir: Path) -> Config:
    """The validated config a run was made with, from its ``.hydra/config.yaml``."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise ReportError(f"{run_dir}: no .hydra/config.yaml to re-run the world from")
    return to_config(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))  # type: ignore[arg-type]


def save_config(cfg: Config, run_dir: Path) -> None:
    """Write ``cfg`` as ``run_dir/.hydra/config.yaml``, so a world made here is a run directory
    like any other (reportable, re-runnable)."""
    write_text_atomic(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def _set(overlay: Any, dotted: str, value: Any) -> None:
    """Set ``dotted`` in the treatment overlay if the overlay sets anything of its group
    (otherwise the base config's value, switched already, reaches the treatment by the merge)."""
    if dotted.split(".")[0] in set_keys(overlay):
        overlay_set(overlay, dotted, value)


def _all_onboarded(cfg: Config) -> Config:
    onboarding = {f: list(ARTIFACTS) for f in FEATURE_FAMILIES}
    features = dataclasses.replace(cfg.features, onboarding=onboarding, changes=[])
    overlay = copy.deepcopy(cfg.experiment.treatment)
    _set(overlay, "features.onboarding", onboarding)
    _set(overlay, "features.changes", [])
    return dataclasses.replace(cfg, features=features,
                               experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


def _synchronous_deploys(cfg: Config) -> Config:
    keys = {"index.build_mode": "batch", "index.large_deploy_s": 0.0, "index.fresh_deploy_s": 0.0,
            "index.large_build_interval_s": cfg.releases.interval_s,
            "releases.query_rollout_delay_s": 0.0}
    index = dataclasses.replace(cfg.index, build_mode="batch", large_deploy_s=0.0, fresh_deploy_s=0.0,
                                large_build_interval_s=cfg.releases.interval_s)
    releases = dataclasses.replace(cfg.releases, query_rollout_delay_s=0.0)
    overlay = copy.deepcopy(cfg.experiment.treatment)
    for k, v in keys.items():
        _set(overlay, k, v)
    return dataclasses.replace(cfg, index=index, releases=releases,
                               experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


def _diverted(cfg: Config) -> Config:
    return dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, training="diverted"))


def _no_sla(cfg: Config) -> Config:
    overlay = copy.deepcopy(cfg.experiment.treatment)
    _set(overlay, "latency.enabled", False)
    return dataclasses.replace(cfg, latency=dataclasses.replace(cfg.latency, enabled=False),
                               experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


def _exact_serving(cfg: Config) -> Config:
    keys = {"index.factory": "Flat", "index.nprobe": 1, "serving.query_dtype": "fp32",
            "serving.item_dtype": "fp32"}
    overlay = copy.deepcopy(cfg.experiment.treatment)
    for k, v in keys.items():
        _set(overlay, k, v)
    return dataclasses.replace(
        cfg, index=dataclasses.replace(cfg.index, factory="Flat", nprobe=1),
        serving=dataclasses.replace(cfg.serving, query_dtype="fp32", item_dtype="fp32"),
        experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


def _newest_served(cfg: Config) -> Config:
    overlay = copy.deepcopy(cfg.experiment.treatment)
    _set(overlay, "releases.pointer_lag", 0)
    return dataclasses.replace(cfg, releases=dataclasses.replace(cfg.releases, pointer_lag=0),
                               experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


def _point_in_time(cfg: Config) -> Config:
    overlay = copy.deepcopy(cfg.experiment.treatment)
    _set(overlay, "features.label_join_share", 0.0)
    return dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, label_join_share=0.0),
                               experiment=dataclasses.replace(cfg.experiment, treatment=overlay))


BOT_FILTER = 20.0  # the attribution's bot filter: request rate over the median user's


def _bots_filtered(cfg: Config) -> Config:
    return dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation,
                                                                   bot_filter_rate=BOT_FILTER))


def _bots_present(cfg: Config, m: dict[str, Any]) -> bool:
    return cfg.world.bot_share > 0 and cfg.evaluation.bot_filter_rate == 0 and two_arms(m)


def _parity_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any(a.get("parity_audit") for a in m["arms"].values())


def _skew_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any(float(k) != 0 and v > 0 for a in m["arms"].values()
               for k, v in (a.get("version_distance") or {}).get("all", {}).items())


def _exposure_present(cfg: Config, m: dict[str, Any]) -> bool:
    return two_arms(m) and cfg.experiment.training == "pooled" and bool(m.get("releases"))


def _timeouts_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any(ok is not None and 1.0 - ok >= TIMEOUT_PRESENT for a in m["arms"].values()
               for ok in (a.get("success_rate") or {}).values())


def _serving_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any((a.get("ann_recall") is not None and a["ann_recall"] < SERVING_RECALL_PRESENT)
               or (a.get("l1_score_error") or 0.0) >= SERVING_ERROR_PRESENT
               for a in m["arms"].values())


def _leakage_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any("point_in_time" in model
               for model in ((m.get("offline") or {}).get("models") or {}).values())


def _version_present(cfg: Config, m: dict[str, Any]) -> bool:
    return any((a.get("served_versions") or {}).get("behind_share", 0.0) > 0
               for a in m["arms"].values())


Switch = tuple[Callable[[Config, dict[str, Any]], bool], Callable[[Config], Config], str]
HAZARDS: dict[str, Switch] = {
    "parity_gap": (_parity_present, _all_onboarded,
                   "every family onboarded to every artifact"),
    "version_skew": (_skew_present, _synchronous_deploys,
                     "synchronous deploys (batch builds at each release, query rolled out with it)"),
    "exposure_bias": (_exposure_present, _diverted, "diverted training"),
    "timeouts": (_timeouts_present, _no_sla, "no SLA enforced"),
    "serving_path": (_serving_present, _exact_serving, "exact fp32 serving (Flat index, fp32 towers)"),
    "model_version": (_version_present, _newest_served, "the newest version served (no pointer lag)"),
    "label_leakage": (_leakage_present, _point_in_time,
                      "features as of each request in every training pipeline (no label-time join)"),
    "outlier_domination": (_bots_present, _bots_filtered,
                           f"a bot filter on the offline evaluation (request rate > {BOT_FILTER:g}x "
                           "the median user's)"),
}


def present_hazards(cfg: Config, metrics: dict[str, Any]) -> list[str]:
    return [h for h, (present, _, _) in HAZARDS.items() if present(cfg, metrics)]


def switched(cfg: Config, off: list[str]) -> Config:
    """``cfg`` with the hazards in ``off`` switched off (and no ground-truth or exposure twins)."""
    for h in off:
        cfg = HAZARDS[h][1](cfg)
    cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, ground_truth=False,
                                                                  exposure_twin=False))
    if "treatment" in cfg.experiment.arms:
        arm_config(cfg, cfg.experiment.treatment)
    return cfg


OUTCOMES: dict[str, str] = {
    "log_mae_gap": "online minus offline change of L1's log_mae against L2 (see the report's gap); "
                   "one arm: online minus offline log_mae",
    "cpa_lift": "the online CPA lift of the treatment (two arms) or the arm's CPA (one arm)",
    "cpa_lift_stratified": "the online CPA lift of the treatment compared within each ramp step "
                           "(two arms; `lift_stratified`); one arm: undefined",
    "treatment_l1_log_mae": "online l1_log_mae of the treatment (two arms) or the arm",
}


def outcomes(m: dict[str, Any]) -> dict[str, float | None]:
    arm = "treatment" if two_arms(m) else next(iter(m["arms"]))
    cpa = ((m.get("lift") or {}).get("cpa") or {}).get("estimate") if two_arms(m) \
        else m["arms"][arm].get("cpa")
    strat = (stratified(m, "cpa") or {}).get("estimate") if two_arms(m) else None
    return {"log_mae_gap": gap(m).gap, "cpa_lift": cpa, "cpa_lift_stratified": strat,
            "treatment_l1_log_mae": m["arms"][arm].get("l1_log_mae")}


def shapley(hazards: list[str], value: Callable[[frozenset[str]], float]) -> dict[str, float]:
    """Exact Shapley values of ``value`` (a function of the set of hazards switched on)."""
    n = len(hazards)
    out = {}
    for h in hazards:
        others = [x for x in hazards if x != h]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in combinations(others, size):
                total += weight * (value(frozenset(s) | {h}) - value(frozenset(s)))
        out[h] = total
    return out


def world_name(on: frozenset[str], hazards: list[str]) -> str:
    if not on:
        return "all_off"
    return "on_" + "+".join(h for h in hazards if h in on)


def run_world(cfg: Config, world_dir: Path, scenario: str) -> dict[str, Any]:
    """One attribution world: its config saved beside it (``.hydra/config.yaml``), then run."""
    save_config(cfg, world_dir)
    return run(cfg, world_dir, scenario=scenario)


def run_saved(world_dir: Path, scenario: str) -> dict[str, Any]:
    """One attribution world from the config saved in its directory (what a worker process runs).
    The typed config itself would now cross to a worker too (its overlay classes pickle by name,
    :func:`sim.config.schema._importable`); reading the saved file was kept from before that, and
    is tested equal to the in-process path."""
    return run(load_run_config(world_dir), world_dir, scenario=scenario)


def attribute(run_dir: Path, hazards: list[str] | None = None,
              runner: Callable[[Config, Path], dict[str, Any]] | None = None,
              jobs: int = 1, backend: str = "loky") -> dict[str, Any]:
    """Run the attribution worlds of ``run_dir`` and return the ``attribution`` entry.

    ``hazards`` restricts the switches to a subset of those present; ``runner`` (config, world
    directory) -> metrics runs the worlds one after another in this process (default
    :func:`run_world`). The worlds share a checkpoint directory (``cache.dir`` if the run set
    one, else ``attribution/checkpoints``): what a switch does not change (the start-up models,
    and any release whose training inputs match) is trained once.

    ``jobs`` > 1 runs that many worlds at a time on a joblib ``backend``: ``loky`` (local
    processes) or ``ray`` (Ray's joblib backend, on the cluster ``ray.init`` finds, e.g. by
    ``RAY_ADDRESS``). Every world runs at the thread counts the run itself used (its
    ``manifest.threads``), so the common random numbers hold to the last bit wherever it runs:
    give it ``jobs`` times that many cores. On this project's 2-core machine two 2-thread worlds
    at a time run slower than one after another (``docs/running.md``), so ``jobs`` is 1 here.
    """
    if jobs < 1:
        raise ReportError(f"--jobs must be >= 1, got {jobs}")
    if backend == "ray":  # an optional dependency (the `ray` extra): found when asked for
        try:
            importlib.import_module("ray.util.joblib").register_ray()
        except ImportError as exc:
            raise ReportError(f"--backend ray needs Ray: pip install -e '.[ray]' ({exc})") from exc
    elif backend != "loky":
        raise ReportError(f"--backend must be loky or ray, got {backend!r}")
    manifest, metrics = read_run(run_dir)
    cfg = load_run_config(run_dir)
    present = present_hazards(cfg, metrics)
    if hazards is not None:
        unknown = sorted(set(hazards) - set(HAZARDS))
        if unknown:
            raise ReportError(f"unknown hazards {unknown}; known: {sorted(HAZARDS)}")
        absent = sorted(set(hazards) - set(present))
        if absent:
            raise ReportError(f"hazards {absent} are not present in {run_dir} (present: {present})")
        present = [h for h in present if h in hazards]
    scenario = f"{manifest.get('scenario', 'default')}:attribution"
    if cfg.cache.dir is None:  # the worlds share their checkpoints (start-up models, at least)
        cache = dataclasses.replace(cfg.cache, dir=str(run_dir / "attribution" / "checkpoints"))
        cfg = dataclasses.replace(cfg, cache=cache)
    used = manifest.get("threads") or {}
    if "torch" in used and "faiss" in used:  # the run's own counts, wherever a world runs
        cfg = dataclasses.replace(cfg, threads=dataclasses.replace(
            cfg.threads, torch=str(used["torch"]), faiss=str(used["faiss"])))

    values: dict[frozenset[str], dict[str, float | None]] = {frozenset(present): outcomes(metrics)}
    worlds = [{"name": "run", "on": present, "dir": "."}]
    todo: list[tuple[frozenset[str], Config, Path]] = []
    for size in range(len(present)):
        for on in combinations(present, size):
            key = frozenset(on)
            name = world_name(key, present)
            d = run_dir / "attribution" / name
            worlds.append({"name": name, "on": list(on), "dir": f"attribution/{name}"})
            try:
                values[key] = outcomes(read_run(d)[1])
            except ReportError:
                todo.append((key, switched(cfg, [h for h in present if h not in key]), d))
    if runner is not None or jobs == 1:
        one = runner or functools.partial(run_world, scenario=scenario)
        done = [one(c, d) for _, c, d in todo]
    else:
        for _, c, d in todo:  # a worker reads its world's config from its directory
            save_config(c, d)
        with joblib.parallel_backend(backend, n_jobs=jobs):
            done = joblib.Parallel()(joblib.delayed(run_saved)(d, scenario) for _, _, d in todo)
    for (key, _, _), m in zip(todo, done, strict=True):
        values[key] = outcomes(m)
    result: dict[str, Any] = {
        "hazards": present, "switch_off": {h: HAZARDS[h][2] for h in present},
        "worlds": worlds, "outcomes": {}}
    for name, description in OUTCOMES.items():
        vals = {k: v[name] for k, v in values.items()}
        if any(v is None for v in vals.values()):
            result["outcomes"][name] = None
            continue
        phi = shapley(present, lambda s, vals=vals: vals[s])  # type: ignore[misc]
        result["outcomes"][name] = {
            "description": description, "all_on": vals[frozenset(present)],
            "all_off": vals[frozenset()], "shapley": phi,
            "one_off": {h: vals[frozenset(present) - {h}] for h in present},
            "worlds": {world_name(k, present): v for k, v in vals.items()}}
    return result
