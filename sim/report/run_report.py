"""``make_report(run_dir)``: ``report.md`` and ``plots/*.png`` for one finished run, from its
``metrics.json`` and ``logs/*.parquet`` only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sim.billing import billed_costs
from sim.logs.writer import write_text_atomic
from sim.report import plots
from sim.report.document import render
from sim.report.retrospective import observations
from sim.report.verdicts import verdicts
from sim.results import to_json
from sim.stats import lift, ratio
from sim.summary import cells

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_TABLES = ("impressions", "conversions", "requests", "budget_days", "version_distance",
              "feature_coverage", "offline_eval")


class ReportError(ValueError):
    """The directory is not a finished run (or sweep) the report can read."""


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's manifest and metrics; raises ReportError if the run is not complete."""
    manifest_path, metrics_path = run_dir / "manifest.json", run_dir / "metrics.json"
    if not manifest_path.exists():
        raise ReportError(f"{run_dir} is not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("status") != "complete" or not metrics_path.exists():
        raise ReportError(f"{run_dir}: run status is {manifest.get('status')!r}, not 'complete'"
                          + (f" ({manifest['error']})" if manifest.get("error") else ""))
    return manifest, json.loads(metrics_path.read_text())


def daily_cpa(logs: dict[str, pl.DataFrame], arms: list[str], clusters: str = "user_advertiser"
              ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """CPA per day and arm with its 95% interval, and with two arms the day's CPA lift, from the
    day's (user, advertiser) cells clustered like the run's intervals (a conversion counts on its
    impression's day)."""
    out: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    lifts: list[dict[str, Any]] = []
    empty = {"estimate": None, "low": None, "high": None}
    for day in sorted(set(logs["impressions"]["day"].to_list())):
        sub = {**logs, "impressions": logs["impressions"].filter(pl.col("day") == day),
               "requests": logs["requests"].filter(pl.col("day") == day)}
        ratios: dict[str, Any] = {}
        for arm in arms:
            c = cells(sub, arm)
            adv = c["advertiser_id"].to_numpy() if clusters == "user_advertiser" else None
            r = (ratio(c["ocpm_spend"].to_numpy(), c["ocpm_conversions"].to_numpy(),
                       c["user_id"].to_numpy(), adv) if c.height else None)
            ratios[arm] = r
            out[arm].append({"day": int(day), **(to_json(r.interval()) if r is not None else empty)})
        if len(arms) == 2:
            daily = lift(ratios[arms[1]], ratios[arms[0]])
            lifts.append({"day": int(day), **(to_json(daily) if daily is not None else empty)})
    return out, lifts


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``) as a plain dict, {} if absent."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}  # type: ignore[return-value]


def _slas(cfg: dict[str, Any], arms: list[str]) -> dict[str, dict[str, float]]:
    """Each arm's SLA per stage (ms) from the config (the treatment overlay may change them)."""
    base = (cfg.get("latency") or {}).get("sla_ms") or {}
    over = ((cfg.get("experiment") or {}).get("treatment") or {}).get("latency", {}).get("sla_ms", {})
    return {arm: {**base, **(over if arm == "treatment" else {})} for arm in arms}


def draw_plots(run_dir: Path, plot_dir: Path | None = None,
               names: list[str] | None = None) -> dict[str, Figure | None]:
    """The report's plots of a finished run (``names``, default all of ``PLOTS``), each written to
    ``plot_dir/NAME.png`` when ``plot_dir`` is given; NAME -> the figure, None where the run has
    nothing to draw."""
    _, metrics = read_run(run_dir)
    logs = {t: pl.read_parquet(run_dir / "logs" / f"{t}.parquet") for t in LOG_TABLES}
    logs["impressions"] = billed_costs(logs["impressions"], logs["budget_days"])
    probe = run_dir / "logs" / "serving_path.parquet"  # absent in runs made before the probe
    sp = pl.read_parquet(probe) if probe.exists() else pl.DataFrame()
    arms = list(metrics["arms"])
    cfg = _config(run_dir)
    clusters = cfg.get("experiment", {}).get("ci_clusters", "user_advertiser")
    draw: dict[str, Callable[[Path | None], Figure | None]] = {
        "gap": lambda p: plots.gap(metrics, p),
        "calibration_by_decile": lambda p: plots.calibration_by_decile(logs["offline_eval"],
                                                                       metrics, p),
        "cpa_daily": lambda p: plots.cpa_daily(*daily_cpa(logs, arms, clusters), p),
        "version_distance": lambda p: plots.version_distance(logs["version_distance"], p),
        "coverage": lambda p: plots.coverage(logs["feature_coverage"], p),
        "recall": lambda p: plots.recall(metrics, p),
        "exposure": lambda p: plots.exposure(metrics, p),
        "latency": lambda p: plots.latency(metrics, p, _slas(cfg, arms)),
        "skew_sweep": lambda p: plots.skew_sweep(metrics, p),
        "serving_path": lambda p: plots.serving_path(sp, p),
    }
    unknown = sorted(set(names or []) - set(draw))
    if unknown:
        raise ReportError(f"unknown plot(s) {unknown}; known: {list(draw)}")
    if plot_dir is not None:
        plot_dir.mkdir(exist_ok=True)
    return {n: draw[n](None if plot_dir is None else plot_dir / f"{n}.png")
            for n in (names or list(draw))}


def make_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/``; return the report's path."""
    manifest, metrics = read_run(run_dir)
    drawn = draw_plots(run_dir, run_dir / "plots")
    title = f"{manifest.get('scenario', '?')} (seed {manifest.get('seed')})"
    found = verdicts(metrics)
    text = render(metrics, found, {k for k, v in drawn.items() if v is not None}, title,
                  observations(metrics, found))
    path = run_dir / "report.md"
    write_text_atomic(path, text)
    return path
