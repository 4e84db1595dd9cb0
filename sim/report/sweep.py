"""Sweep aggregation: a Hydra multirun directory into ``sweep.parquet``, ``sweep.md`` and a plot.

``gather(sweep_dir)`` reads every job directory (``0/``, ``1/`` ...): its ``.hydra/overrides.yaml``
(one column ``override.<key>`` per overridden key, values parsed as YAML scalars), its manifest
(``job``, ``status``, ``wall_s``) and every scalar of its ``metrics.json`` flattened to a dotted
column (``arms.control.cpa``, ``lift.cpa.estimate`` ...; lists are left out). A failed job is a row
with its status and no metrics.

``summarize_metric`` groups the jobs by the swept keys other than ``seed`` and gives the mean of
a metric across seeds with a 95% Student-t interval (``mean ± t(0.975, n−1) · sd / sqrt(n)``; a
group of one seed has no interval). The plot puts the ``x`` key on the axis and draws one line per
value of the other swept keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from scipy import stats

from sim.logs.writer import write_text_atomic
from sim.report.document import table
from sim.report.plots import plt, save
from sim.report.run_report import ReportError

REPLICATE_KEYS = ("seed",)
DEFAULT_METRICS = ("lift.cpa.estimate", "arms.control.cpa")


def flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    """Every scalar of ``obj`` into ``out`` under its dotted key (lists are left out)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif not isinstance(obj, list):
        out[prefix] = obj


def overrides_of(job_dir: Path) -> dict[str, Any]:
    path = job_dir / ".hydra" / "overrides.yaml"
    out: dict[str, Any] = {}
    for item in (yaml.safe_load(path.read_text()) if path.exists() else None) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[f"override.{key}"] = parsed if isinstance(parsed, int | float | str | bool) else value
    return out


def _column(values: list[Any]) -> pl.Series:
    known = [v for v in values if v is not None]
    if known and all(isinstance(v, int) and not isinstance(v, bool) for v in known):
        return pl.Series(values, dtype=pl.Int64)
    if known and all(isinstance(v, int | float) and not isinstance(v, bool) for v in known):
        return pl.Series([None if v is None else float(v) for v in values], dtype=pl.Float64)
    if known and all(isinstance(v, bool) for v in known):
        return pl.Series(values, dtype=pl.Boolean)
    return pl.Series([None if v is None else str(v) for v in values], dtype=pl.Utf8)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (those with a manifest), in job order."""
    return sorted((d for d in sweep_dir.iterdir() if d.is_dir() and (d / "manifest.json").exists()),
                  key=lambda d: (len(d.name), d.name))


def gather(sweep_dir: Path) -> pl.DataFrame:
    """One row per job of the sweep (see the module docstring)."""
    import json

    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise ReportError(f"{sweep_dir}: no job directories with a manifest.json")
    rows = []
    for d in jobs:
        manifest = json.loads((d / "manifest.json").read_text())
        row: dict[str, Any] = {"job": d.name, "status": manifest.get("status"),
                               "wall_s": manifest.get("wall_s"), **overrides_of(d)}
        if manifest.get("status") == "complete" and (d / "metrics.json").exists():
            flatten("", json.loads((d / "metrics.json").read_text()), row)
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return pl.DataFrame({k: _column([r.get(k) for r in rows]) for k in keys})


def swept_keys(frame: pl.DataFrame) -> list[str]:
    """Override keys with more than one value, replicate keys (``seed``) excluded."""
    return [c.removeprefix("override.") for c in frame.columns if c.startswith("override.")
            and c.removeprefix("override.") not in REPLICATE_KEYS and frame[c].n_unique() > 1]


def t_interval(values: np.ndarray) -> tuple[float, float | None, float | None]:
    """Mean and 95% Student-t interval of ``values`` (no interval for one value)."""
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def summarize_metric(frame: pl.DataFrame, metric: str, by: list[str]) -> pl.DataFrame:
    """Per combination of the ``by`` keys: n, mean, low, high of ``metric`` across the jobs."""
    if metric not in frame.columns:
        raise ReportError(f"metric {metric!r} is not in the sweep (e.g. {DEFAULT_METRICS})")
    cols = [f"override.{k}" for k in by]
    done = frame.filter(pl.col(metric).is_not_null())
    out = []
    for key, group in done.group_by(cols, maintain_order=True) if cols else [((), done)]:
        mean, low, high = t_interval(group[metric].cast(pl.Float64).to_numpy())
        out.append({**dict(zip(by, key, strict=True)), "n": group.height,
                    "mean": mean, "low": low, "high": high})
    return pl.DataFrame(out).sort(by) if by and out else pl.DataFrame(out)


def _plot(summary: pl.DataFrame, metric: str, x: str, lines: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    xs_all = summary[x].to_list()
    numeric = all(isinstance(v, int | float) for v in xs_all)
    cats = list(dict.fromkeys(xs_all))
    groups = summary.group_by(lines, maintain_order=True) if lines else [((), summary)]
    for key, g in groups:
        g = g.sort(x)
        xs = np.array(g[x].to_list() if numeric else [cats.index(v) for v in g[x].to_list()],
                      dtype=float)
        y = g["mean"].to_numpy()
        lo = np.where(g["low"].is_null().to_numpy(), y, g["low"].fill_null(0.0).to_numpy())
        hi = np.where(g["high"].is_null().to_numpy(), y, g["high"].fill_null(0.0).to_numpy())
        label = ", ".join(f"{k}={v}" for k, v in zip(lines, key, strict=True)) or metric
        ax.errorbar(xs, y, yerr=[y - lo, hi - y], marker="o", capsize=4, label=label,
                    ls="-" if numeric else "none")
    if not numeric:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set(xlabel=x, ylabel=metric, title=f"{metric} against {x} (mean across seeds, 95% t-interval)")
    ax.legend(fontsize=7)
    save(fig, path)


def make_sweep_report(sweep_dir: Path, metric: str | None = None, x: str | None = None,
                      replicates: Path | None = None) -> Path:
    """Write ``sweep.parquet``, ``sweep.md`` and ``plots/sweep_<metric>.png``; return sweep.md.
    ``replicates``: the cross-seed report to link (:mod:`sim.report.replicates`)."""
    frame = gather(sweep_dir)
    tmp = sweep_dir / "sweep.parquet.tmp"
    frame.write_parquet(tmp)
    tmp.replace(sweep_dir / "sweep.parquet")
    metric = metric or next((m for m in DEFAULT_METRICS if m in frame.columns), None)
    if metric is None:
        raise ReportError(f"{sweep_dir}: no job has metrics (statuses: "
                          f"{frame['status'].to_list()}); pass --metric")
    swept = swept_keys(frame)
    if x is not None and x not in swept:
        raise ReportError(f"--x {x!r} is not a swept key (swept: {swept})")
    x = x or (swept[0] if swept else None)
    lines = [k for k in swept if k != x]
    summary = summarize_metric(frame, metric, swept)
    failed = frame.filter(pl.col("status") != "complete")["job"].to_list()
    parts = [f"# Sweep: {sweep_dir}",
             f"{frame.height} jobs ({frame.height - len(failed)} complete"
             + (f"; failed or unfinished: {', '.join(failed)}" if failed else "") + "). "
             f"Swept keys: {', '.join(swept) or 'none'} (replicates: {', '.join(REPLICATE_KEYS)}). "
             "Every job's metrics and overrides are in `sweep.parquet`."
             + (f" Verdicts, metrics and lifts across seeds: [{replicates.name}]({replicates.name})."
                if replicates is not None else ""),
             f"## {metric}", "Mean across seeds with a 95% Student-t interval.",
             table(summary.columns, summary.rows(), ".4g") if summary.height
             else "No complete job has this metric."]
    if x is not None and summary.height:
        name = "sweep_" + metric.replace(".", "_") + ".png"
        (sweep_dir / "plots").mkdir(exist_ok=True)
        _plot(summary, metric, x, lines, sweep_dir / "plots" / name)
        parts.append(f"![{metric} against {x}](plots/{name})")
    path = sweep_dir / "sweep.md"
    write_text_atomic(path, "\n\n".join(parts) + "\n")
    return path
