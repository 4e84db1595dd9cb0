"""Findings across seeds: the cross-seed report of a sweep with replicates.

A sweep whose jobs repeat a world at several seeds (``python -m sim replicates=N``, or any ``-m``
sweep over ``seed``) is read one *group* at a time: the jobs that share every override but the
seed. For each group with at least two complete seeds, from each job's ``metrics.json`` only
(the rules the single-run report applies, :mod:`sim.report.verdicts` and
:mod:`sim.report.retrospective`):

* every verdict as "named in k of N seeds", with each seed's status;
* the retrospective's observations (two-arm runs) as "holds in k of N";
* the headline metrics (:data:`HEADLINE`, and the report's derived numbers: the offline change
  by log source, the gap, each arm's predicted skew cost) and every lift as the mean across
  seeds with a 95% Student-t interval, the median and range, and the per-seed values; a lift
  also says in how many seeds its own 95% interval excluded 0; with a ramp of several steps,
  every lift stratified by ramp step too (``lift_stratified``);
* the attribution's Shapley values, when the jobs were attributed, the same way.

Where groups differ in one swept key and share seeds (a hazard on against off, a knob at two
values), the comparison is *paired*: for each other value of that key against its first value,
the per-seed differences of each headline metric at the seeds both have, with their mean and
t-interval (the seed's draws cancel in a difference, so the interval is narrower than the two
groups' intervals suggest).

Written as ``replicates.md`` and ``replicates.json`` beside ``sweep.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.logs.writer import write_json_atomic, write_text_atomic
from sim.report.document import table
from sim.report.evidence import gap, offline_change, skew_cost, skew_expectation, two_arms
from sim.report.retrospective import observations
from sim.report.run_report import ReportError
from sim.report.sweep import flatten, job_dirs, overrides_of, t_interval
from sim.report.verdicts import verdicts

# headline metrics, as patterns over the dotted metric keys (``*`` one part)
HEADLINE = (
    "arms.*.cpa", "arms.*.ocpm_cpa_to_target", "arms.*.ocpm_impression_share",
    "arms.*.l1_log_mae", "arms.*.l1_calibration", "arms.*.conversions", "arms.*.spend",
    "offline.models.*.sources.*.overall.log_mae", "offline.skew_gate.*.increase",
    "lift_concentration.cpa.top1_share", "lift_concentration.cpa.top3_share",
    "arms.*.ann_recall", "arms.*.l1_score_error",
)


@dataclass(frozen=True, kw_only=True)
class Spread:
    """A number across seeds: mean, 95% t-interval (None below two seeds), median and range
    (``min`` … ``max``), per-seed values."""

    n: int
    mean: float
    low: float | None
    high: float | None
    median: float
    min: float
    max: float
    per_seed: dict[int, float]


@dataclass(frozen=True, kw_only=True)
class Count:
    """How many of a group's seeds show something, and what each seed showed."""

    k: int
    n: int
    per_seed: dict[int, str]


@dataclass(frozen=True, kw_only=True)
class Group:
    overrides: dict[str, Any]  # the group's overrides other than the seed
    seeds: list[int]
    verdicts: dict[str, Count]  # verdict key -> seeds whose report names it a cause
    observations: dict[str, Count]  # the retrospective's claim -> seeds where it holds
    metrics: dict[str, Spread]
    lifts: dict[str, Spread]  # lift.<metric>.estimate
    lifts_significant: dict[str, Count]  # seeds whose own 95% interval excludes 0
    shapley: dict[str, Spread] = field(default_factory=dict)  # <outcome>.<hazard>


@dataclass(frozen=True, kw_only=True)
class Paired:
    key: str  # the swept key that differs
    base: Any  # its first value
    other: Any
    fixed: dict[str, Any]  # the other overrides, the same in both
    differences: dict[str, Spread]  # metric -> (other − base) per shared seed


def spread(per_seed: dict[int, float]) -> Spread:
    values = np.array(list(per_seed.values()), dtype=float)
    mean, low, high = t_interval(values)
    return Spread(n=values.size, mean=mean, low=low, high=high, median=float(np.median(values)),
                  min=float(values.min()), max=float(values.max()), per_seed=dict(per_seed))


def derived(m: dict[str, Any]) -> dict[str, float]:
    """The single-run report's derived numbers: with two arms the offline change of log_mae by
    log source (treatment / control − 1) and the gap; each arm's predicted skew cost."""
    out: dict[str, float | None] = {}
    if two_arms(m):
        out |= {f"offline_change.{k}": v for k, v in offline_change(m).items()}
        g = gap(m)
        out |= {"gap.online_l1_log_mae_lift": g.online, "gap.gap": g.gap}
    for arm in m["arms"]:
        out[f"skew_cost.{arm}"] = skew_cost(skew_expectation(m, arm))
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def _headline(m: dict[str, Any]) -> dict[str, float]:
    """The run's numbers that match :data:`HEADLINE`."""
    flat: dict[str, Any] = {}
    flatten("", {k: v for k, v in m.items() if k in ("arms", "offline", "lift_concentration")},
            flat)
    patterns = [re.compile("^" + re.escape(p).replace(r"\*", "[^.]+") + "$") for p in HEADLINE]
    return {k: float(v) for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            and any(p.match(k) for p in patterns)}


@dataclass(frozen=True, kw_only=True)
class Job:
    seed: int
    overrides: dict[str, Any]  # without the seed
    metrics: dict[str, Any]


def jobs_of(sweep_dir: Path) -> list[Job]:
    """The complete jobs of a sweep with their seed (from the job's manifest) and other overrides."""
    out = []
    for d in job_dirs(sweep_dir):
        manifest_path, metrics_path = d / "manifest.json", d / "metrics.json"
        if not metrics_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("status") != "complete" or manifest.get("seed") is None:
            continue
        overrides = {k.removeprefix("override."): v for k, v in overrides_of(d).items()
                     if k != "override.seed"}
        out.append(Job(seed=int(manifest["seed"]), overrides=overrides,
                       metrics=json.loads(metrics_path.read_text())))
    return out


def _group(jobs: list[Job]) -> Group:
    jobs = sorted(jobs, key=lambda j: j.seed)
    seeds = [j.seed for j in jobs]
    if len(set(seeds)) < len(seeds):
        raise ReportError(f"two jobs ran the same world at the same seed ({jobs[0].overrides}, "
                          f"seeds {seeds}): a replicate must be another seed")
    verdict_rows: dict[str, dict[int, str]] = {}
    named: dict[str, int] = {}
    obs_rows: dict[str, dict[int, str]] = {}
    holds: dict[str, int] = {}
    metric_rows: dict[str, dict[int, float]] = {}
    lift_rows: dict[str, dict[int, float]] = {}
    sig_rows: dict[str, dict[int, str]] = {}
    sig: dict[str, int] = {}
    shapley_rows: dict[str, dict[int, float]] = {}
    for job in jobs:
        found = verdicts(job.metrics)
        for v in found:
            verdict_rows.setdefault(v.key, {})[job.seed] = v.status
            named[v.key] = named.get(v.key, 0) + int(v.named)
        for o in observations(job.metrics, found):
            obs_rows.setdefault(o.claim, {})[job.seed] = {True: "yes", False: "no", None: "n/a"}[o.holds]
            holds[o.claim] = holds.get(o.claim, 0) + int(bool(o.holds))
        for key, value in {**_headline(job.metrics), **derived(job.metrics)}.items():
            metric_rows.setdefault(key, {})[job.seed] = value
        lifts = dict(job.metrics.get("lift") or {})
        if len(job.metrics.get("lift_by_step") or []) > 1:  # with one step it is the pooled lift
            lifts |= {f"{k} (stratified by ramp step)": v
                      for k, v in (job.metrics.get("lift_stratified") or {}).items()}
        for name, iv in lifts.items():
            if not iv or iv.get("estimate") is None:
                continue
            lift_rows.setdefault(name, {})[job.seed] = float(iv["estimate"])
            excludes = iv.get("low") is not None and (iv["low"] > 0 or iv["high"] < 0)
            sig_rows.setdefault(name, {})[job.seed] = "yes" if excludes else "no"
            sig[name] = sig.get(name, 0) + int(excludes)
        for outcome, res in ((job.metrics.get("attribution") or {}).get("outcomes") or {}).items():
            for hazard, value in ((res or {}).get("shapley") or {}).items():
                shapley_rows.setdefault(f"{outcome}.{hazard}", {})[job.seed] = float(value)
    n = len(jobs)
    return Group(
        overrides=jobs[0].overrides, seeds=seeds,
        verdicts={k: Count(k=named[k], n=n, per_seed=r) for k, r in verdict_rows.items()},
        observations={k: Count(k=holds[k], n=n, per_seed=r) for k, r in obs_rows.items()},
        metrics={k: spread(r) for k, r in metric_rows.items()},
        lifts={k: spread(r) for k, r in lift_rows.items()},
        lifts_significant={k: Count(k=sig[k], n=len(r), per_seed=r) for k, r in sig_rows.items()},
        shapley={k: spread(r) for k, r in shapley_rows.items()})


def _key(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides, sort_keys=True, default=str)


def groups(jobs: list[Job]) -> list[Group]:
    """The jobs grouped by every override but the seed; groups of at least two seeds."""
    by: dict[str, list[Job]] = {}
    for job in jobs:
        by.setdefault(_key(job.overrides), []).append(job)
    return [_group(js) for js in by.values() if len(js) >= 2]


def _numbers(g: Group) -> dict[str, Spread]:
    """A group's headline metrics and its lifts (``lift.<name>``)."""
    return {**g.metrics, **{f"lift.{k}": v for k, v in g.lifts.items()}}


def paired(found: list[Group]) -> list[Paired]:
    """For each swept key and each of its values after the first, the per-seed differences
    against the first value at the seeds both groups have, the other overrides held fixed."""
    out = []
    keys = sorted({k for g in found for k in g.overrides})
    for key in keys:
        values = list(dict.fromkeys(g.overrides.get(key) for g in found))
        if len(values) < 2:
            continue
        for base in found:
            if base.overrides.get(key) != values[0]:
                continue
            fixed = {k: v for k, v in base.overrides.items() if k != key}
            for other in found:
                o = other.overrides
                if o.get(key) == values[0] or {k: v for k, v in o.items() if k != key} != fixed:
                    continue
                diffs: dict[str, Spread] = {}
                theirs = _numbers(other)
                for metric, b in _numbers(base).items():
                    a = theirs.get(metric)
                    if a is None:
                        continue
                    shared = sorted(set(a.per_seed) & set(b.per_seed))
                    if len(shared) >= 2:
                        diffs[metric] = spread({s: a.per_seed[s] - b.per_seed[s] for s in shared})
                if diffs:
                    out.append(Paired(key=key, base=values[0], other=o.get(key), fixed=fixed,
                                      differences=diffs))
    return out


SPREAD_HEAD = ("mean", "95% interval", "median (range)")


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _spread_row(name: str, s: Spread, seeds: list[int]) -> list[Any]:
    iv = f"{_g(s.low)} … {_g(s.high)}" if s.low is not None else "n/a"
    return [name, _g(s.mean), iv, f"{_g(s.median)} ({_g(s.min)} … {_g(s.max)})",
            *[_g(s.per_seed.get(seed)) for seed in seeds]]


def _count_row(name: str, c: Count, seeds: list[int]) -> list[Any]:
    return [name, f"{c.k} of {c.n}", *[c.per_seed.get(seed, "—") for seed in seeds]]


def render(sweep_dir: Path, found: list[Group], pairs: list[Paired]) -> str:
    parts = [f"# Across seeds: {sweep_dir}",
             "Each group is the jobs that share every override but the seed. Counts say in how "
             "many seeds a run's own report shows the finding; numbers are means across seeds with "
             "a 95% Student-t interval and every seed's value (`replicates.json` has them all)."]
    keys = list(dict.fromkeys(k for g in found for k in g.overrides))
    varied = [k for k in keys if len({json.dumps(g.overrides.get(k), default=str) for g in found}) > 1]
    shared = {k: v for k, v in found[0].overrides.items() if k not in varied}
    if shared:
        parts.append("Overrides every job shares: "
                     + ", ".join(f"`{k}={v}`" for k, v in shared.items()) + ".")
    for g in found:
        seeds = [str(s) for s in g.seeds]
        name = ", ".join(f"{k}={g.overrides.get(k)}" for k in varied) or "the world"
        parts.append(f"## {name} ({len(g.seeds)} seeds: {', '.join(seeds)})")
        head = ["", "in", *[f"seed {s}" for s in seeds]]
        parts.append("**Verdicts** (named as a cause in k of N seeds):")
        parts.append(table(head, [_count_row(k, c, g.seeds) for k, c in g.verdicts.items()]))
        if g.observations:
            parts.append("**The retrospective's observations** (holds in k of N seeds):")
            parts.append(table(head, [_count_row(k, c, g.seeds) for k, c in g.observations.items()]))
        if g.lifts:
            parts.append("**Lifts** (treatment against control; significant: the seed's own 95% "
                         "interval excludes 0):")
            rows = [[*_spread_row(k, s, g.seeds)[:4], f"{g.lifts_significant[k].k} of "
                     f"{g.lifts_significant[k].n}", *_spread_row(k, s, g.seeds)[4:]]
                    for k, s in g.lifts.items()]
            parts.append(table(["lift", *SPREAD_HEAD, "significant in",
                                *[f"seed {s}" for s in seeds]], rows))
        parts.append("**Headline metrics:**")
        parts.append(table(["metric", *SPREAD_HEAD, *[f"seed {s}" for s in seeds]],
                           [_spread_row(k, s, g.seeds) for k, s in g.metrics.items()]))
        if g.shapley:
            parts.append("**Attribution** (Shapley value per outcome and hazard):")
            parts.append(table(["outcome.hazard", *SPREAD_HEAD, *[f"seed {s}" for s in seeds]],
                               [_spread_row(k, s, g.seeds) for k, s in g.shapley.items()]))
    for p in pairs:
        fixed = ", ".join(f"{k}={v}" for k, v in p.fixed.items())
        parts.append(f"## Paired: {p.key}={p.other} against {p.key}={p.base}"
                     + (f" ({fixed})" if fixed else ""))
        seeds_all = sorted({s for d in p.differences.values() for s in d.per_seed})
        parts.append("Per-seed differences (other − base) at the seeds both have:")
        parts.append(table(["metric", *SPREAD_HEAD, *[f"seed {s}" for s in seeds_all]],
                           [_spread_row(k, s, seeds_all) for k, s in p.differences.items()]))
    return "\n\n".join(parts) + "\n"


def make_replicates_report(sweep_dir: Path) -> Path | None:
    """Write ``replicates.md`` and ``replicates.json`` if some group has two seeds or more;
    return the Markdown's path (None: no replicates in the sweep)."""
    found = groups(jobs_of(sweep_dir))
    if not found:
        return None
    pairs = paired(found)
    write_json_atomic(sweep_dir / "replicates.json",
                      {"groups": [asdict(g) for g in found], "paired": [asdict(p) for p in pairs]})
    path = sweep_dir / "replicates.md"
    write_text_atomic(path, render(sweep_dir, found, pairs))
    return path
