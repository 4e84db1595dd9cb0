"""The report's plots, drawn after the run from ``metrics.json`` and the parquet logs.

Each function takes what it draws (a metrics dict, a polars frame) and a path, writes one PNG
under a temporary name and renames it when complete (or nothing, given no path), and returns
the figure, or None when there was nothing to draw.
Matplotlib runs headless (``Agg``); nothing here is imported by the simulation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from sim.report.evidence import SOURCES, offline_change, offline_overall, two_arms

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class _Pyplot:
    """``matplotlib.pyplot``, imported at the first plot (half a second that every ``import sim``
    would otherwise pay, in every process a sweep starts) and put on the headless ``Agg`` backend
    then, once: a backend a notebook chooses afterwards is left alone."""

    module: Any = None

    def __getattr__(self, name: str) -> Any:
        if _Pyplot.module is None:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot
            _Pyplot.module = matplotlib.pyplot
        return getattr(_Pyplot.module, name)


plt = _Pyplot()

ARM_COLORS = {"control": "#1f77b4", "treatment": "#d62728"}


def save(fig: Figure, path: Path | None) -> Figure:
    """Write ``fig`` to ``path`` (under a temporary name, renamed when complete) unless ``path``
    is None, release pyplot's hold on it, and return it (a notebook shows it once, as a value)."""
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    plt.close(fig)
    return fig


def _color(arm: str) -> str:
    return ARM_COLORS.get(arm, "#555555")


def gap(metrics: dict[str, Any], path: Path | None) -> Figure | None:
    """Offline changes by log source next to the online lifts (two arms), or one arm's offline
    and online L1 log_mae."""
    fig, ax = plt.subplots(figsize=(8, 4))
    if two_arms(metrics):
        rows: list[tuple[str, float | None, float | None, float | None, str]] = []
        for source, change in offline_change(metrics).items():
            rows.append((f"offline\nlog_mae\n{source}", change, None, None, "#7f7f7f"))
        a = metrics["arms"]
        on = (a["treatment"]["l1_log_mae"] / a["control"]["l1_log_mae"] - 1.0
              if a["control"].get("l1_log_mae") and a["treatment"].get("l1_log_mae") else None)
        rows.append(("online\nl1_log_mae", on, None, None, "#9467bd"))
        for name, label in (("cpa", "CPA"), ("conversions_per_request", "conversions\nper request"),
                            ("ocpm_impression_share", "oCPM\nimp. share")):
            iv = (metrics.get("lift") or {}).get(name) or {}
            rows.append((f"online\n{label}", iv.get("estimate"), iv.get("low"), iv.get("high"),
                         "#d62728"))
        x = np.arange(len(rows))
        vals = np.array([np.nan if r[1] is None else 100 * r[1] for r in rows])
        ax.bar(x, vals, color=[r[4] for r in rows])
        for i, r in enumerate(rows):
            if r[2] is not None and r[3] is not None:
                ax.errorbar(i, vals[i], yerr=[[vals[i] - 100 * r[2]], [100 * r[3] - vals[i]]],
                            color="black", capsize=4)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [r[0] for r in rows], fontsize=7)
        ax.set_ylabel("treatment vs control (%)")
        ax.set_title("Offline changes (grey) against online changes (95% intervals)")
    else:
        arm = next(iter(metrics["arms"]))
        if not metrics.get("offline", {}).get("models", {}).get(arm):
            plt.close(fig)
            return None
        labels = [f"offline\n{s}" for s in SOURCES] + ["online\n(impressions)"]
        levels = [(offline_overall(metrics, arm, s) or {}).get("log_mae") for s in SOURCES]
        levels.append(metrics["arms"][arm].get("l1_log_mae"))
        ax.bar(range(len(levels)), [np.nan if v is None else v for v in levels],
               color=["#7f7f7f"] * 3 + ["#9467bd"])
        ax.set_xticks(range(len(levels)), labels, fontsize=8)
        ax.set_ylabel("L1 log_mae against L2 pCVR")
        ax.set_title(f"{arm}: L1 offline by log source and online")
    return save(fig, path)


def calibration_by_decile(offline_eval: pl.DataFrame, metrics: dict[str, Any],
                          path: Path | None) -> Figure | None:
    """Offline calibration (against the true pCVR) and log_mae per decile of the teacher's pCVR,
    for each arm's latest L1, one line per log source."""
    models = metrics.get("offline", {}).get("models", {})
    if not models or offline_eval.height == 0:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = dict(zip(SOURCES, ("-", "--", ":"), strict=True))
    for arm, model in models.items():
        for source, decile_rows in ((s, (model["sources"].get(s) or {}).get("deciles") or [])
                                    for s in SOURCES):
            if not decile_rows:
                continue
            d = [r["decile"] for r in decile_rows]
            kw = {"color": _color(arm), "ls": styles[source], "marker": "o", "ms": 3}
            axes[0].plot(d, [r["calibration"] for r in decile_rows], label=f"{arm} {source}", **kw)
            axes[1].plot(d, [r["log_mae"] for r in decile_rows], **kw)
    axes[0].axhline(1.0, color="black", lw=0.8)
    axes[0].set(xlabel="decile of the L2 teacher's pCVR", ylabel="Σ L1 pCVR / Σ true pCVR",
                title="Offline calibration by decile (1 = calibrated)")
    axes[1].set(xlabel="decile of the L2 teacher's pCVR", ylabel="mean |ln L1 − ln L2|",
                title="Offline log_mae by decile")
    axes[0].legend(fontsize=7)
    return save(fig, path)


def cpa_daily(daily: dict[str, list[dict[str, Any]]], lifts: list[dict[str, Any]] | None,
              path: Path | None) -> Figure | None:
    """CPA per simulated day per arm with its 95% interval (``daily[arm]``: day, estimate, low,
    high) and, with two arms, the day's CPA lift with its interval (``lifts``)."""
    if not any(daily.values()):
        return None
    fig, axes = plt.subplots(1, 2 if lifts else 1, figsize=(12 if lifts else 7, 4), squeeze=False)
    ax = axes[0][0]
    n = len(daily)
    for i, (arm, rows) in enumerate(daily.items()):
        x, y, lo, hi = _points(rows, (i - (n - 1) / 2) * 0.08)
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=4, color=_color(arm),
                    label=arm)
    ax.set(xlabel="day", ylabel="CPA (oCPM spend / conversion)",
           title="CPA per day per arm (95% intervals, users and advertisers)")
    ax.legend()
    if lifts:
        x, y, lo, hi = _points(lifts, 0.0)
        axes[0][1].errorbar(x, 100 * y, yerr=[100 * (y - lo), 100 * (hi - y)], marker="o",
                            capsize=4, color=_color("treatment"))
        axes[0][1].axhline(0, color="black", lw=0.8)
        axes[0][1].set(xlabel="day", ylabel="CPA lift (%)",
                       title="Treatment's CPA lift per day (95% intervals)")
    for a in axes[0]:
        a.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def _points(rows: list[dict[str, Any]], shift: float) -> tuple[np.ndarray, ...]:
    rows = [r for r in rows if r.get("estimate") is not None]
    est = np.array([r["estimate"] for r in rows], dtype=float)
    lo = np.array([r["estimate"] if r.get("low") is None else r["low"] for r in rows], dtype=float)
    hi = np.array([r["estimate"] if r.get("high") is None else r["high"] for r in rows], dtype=float)
    return np.array([r["day"] for r in rows], dtype=float) + shift, est, lo, hi


def version_distance(vd: pl.DataFrame, path: Path | None) -> Figure | None:
    """Share of live retrieved candidates by query − item version, per hour, one panel per arm."""
    if vd.height == 0:
        return None
    arms = sorted(set(vd["arm"].to_list()))
    fig, axes = plt.subplots(1, len(arms), figsize=(6 * len(arms), 3.6), squeeze=False)
    distances = sorted(set(vd["distance"].to_list()))
    cmap = plt.get_cmap("viridis", max(len(distances), 2))
    for ax, arm in zip(axes[0], arms, strict=True):
        g = (vd.filter(pl.col("arm") == arm).group_by("hour", "distance")
             .agg(pl.col("candidates").sum()).sort("hour"))
        hours = sorted(set(g["hour"].to_list()))
        table = np.zeros((len(distances), len(hours)))
        hi = {h: j for j, h in enumerate(hours)}
        for h, d, c in g.iter_rows():
            table[distances.index(d), hi[h]] = c
        table /= np.maximum(table.sum(axis=0, keepdims=True), 1)
        ax.stackplot(hours, table, labels=[f"distance {d}" for d in distances],
                     colors=[cmap(i) for i in range(len(distances))])
        ax.set(xlabel="hour", ylabel="share of candidates", ylim=(0, 1),
               title=f"{arm}: version distance (query − item)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    return save(fig, path)


def serving_path(sp: pl.DataFrame, path: Path | None) -> Figure | None:
    """ANN recall and mean |L1 logit error| of the served path against the exact fp32 path,
    per hour and arm (the serving-path probe)."""
    if sp.height == 0:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for arm in sorted(set(sp["arm"].to_list())):
        g = (sp.filter(pl.col("arm") == arm).group_by("hour")
             .agg(pl.col("recalled", "exact", "abs_error", "candidates").sum()).sort("hour"))
        hours = g["hour"].to_numpy()
        left.plot(hours, g["recalled"] / g["exact"].clip(1), label=arm, color=_color(arm))
        right.plot(hours, g["abs_error"] / g["candidates"].clip(1), label=arm, color=_color(arm))
    left.set(xlabel="hour", ylabel="ann_recall", ylim=(0, 1.02),
             title="share of the exact fp32 top-k served")
    right.set(xlabel="hour", ylabel="mean |served − fp32| L1 logit", title="L1 score error")
    left.legend(fontsize=8)
    return save(fig, path)


def coverage(cov: pl.DataFrame, path: Path | None) -> Figure | None:
    """Hourly coverage of each (arm, artifact, family) that was ever below 99%; a flat line at 1
    for the rest is left out (the title says how many were complete)."""
    if cov.height == 0:
        return None
    c = cov.filter(pl.col("rows") > 0).with_columns((pl.col("present") / pl.col("rows")).alias("share"))
    keys = c.group_by("arm", "artifact", "family").agg(pl.col("share").min().alias("low")).sort(
        "arm", "artifact", "family")
    gaps = keys.filter(pl.col("low") < 0.99)
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm, artifact, family, _ in gaps.iter_rows():
        s = c.filter((pl.col("arm") == arm) & (pl.col("artifact") == artifact)
                     & (pl.col("family") == family)).sort("hour")
        ax.plot(s["hour"], s["share"], color=_color(arm), marker=".", lw=3.5 if arm == "control" else 1.5,
                ls={"l1_embedding": "-", "l2_feature_store": "--"}.get(artifact, ":"),
                label=f"{arm} {family} in {artifact}")
    ax.set(xlabel="hour", ylabel="share of served rows with the family", ylim=(-0.05, 1.05),
           title=f"Feature coverage over time ({keys.height - gaps.height} of {keys.height} "
                 "arm×artifact×family series at ≥ 99% throughout, not drawn)")
    if gaps.height:
        ax.legend(fontsize=7)
    return save(fig, path)


def recall(metrics: dict[str, Any], path: Path | None) -> Figure | None:
    """Retrieval and ranking recall per arm and surface: as served, the headroom (an L1 with
    L2's pCVR) and the oracle (against the true utility)."""
    arms = [a for a, v in metrics["arms"].items() if v.get("retrieval_recall") is not None]
    if not arms:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey=True)
    for row, stage in enumerate(("retrieval", "ranking")):
        for col, prefix in enumerate(("", "headroom_", "oracle_")):
            ax, kind = axes[row][col], f"{prefix}{stage}_recall"
            groups = ["all", *sorted(metrics["arms"][arms[0]].get("recall_by_surface", {}))]
            width = 0.8 / len(arms)
            for i, arm in enumerate(arms):
                a = metrics["arms"][arm]
                vals = [a.get(kind) if g == "all"
                        else (a["recall_by_surface"].get(g) or {}).get(kind) for g in groups]
                ax.bar(np.arange(len(groups)) + i * width,
                       [np.nan if v is None else v for v in vals], width, color=_color(arm),
                       label=arm)
            ax.set_xticks(np.arange(len(groups)) + width * (len(arms) - 1) / 2, groups, fontsize=7)
            ax.set_title({"": "as served", "headroom_": "headroom: L1 with L2's pCVR",
                          "oracle_": "oracle: against the true utility"}[prefix]
                         + f" — {stage} recall", fontsize=9)
            ax.set_ylim(0, 1)
        axes[row][0].set_ylabel("share that passed L1")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def exposure(metrics: dict[str, Any], path: Path | None) -> Figure | None:
    """Online L1 calibration per ramp step and arm (the exposure-bias read-out), beside the
    exposure twin's (the share held at the first step's; dashed) where the run has one."""
    exp = metrics.get("exposure") or {}
    if not exp:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, style, suffix in (("exposure", "-", " (ramp)"), ("exposure_twin", "--", " (held)")):
        for arm, steps in (metrics.get(key) or {}).items():
            steps = [s for s in steps if s.get("l1_calibration") is not None]
            ax.plot([s["step"] for s in steps], [s["l1_calibration"] for s in steps], style,
                    marker="o", color=_color(arm), label=arm + suffix)
    ramp = next(iter(exp.values()))
    ax.set_xticks([s["step"] for s in ramp],
                  [f"day {s['day']:g}\n{s['share']:.0%}" for s in ramp])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xlabel="ramp step (day, treatment share under the ramp)", ylabel="online L1 calibration",
           title="Exposure-bias read-out: L1 calibration per ramp step")
    ax.legend(fontsize="small")
    return save(fig, path)


def latency(metrics: dict[str, Any], path: Path | None, sla: dict[str, dict[str, float]] | None = None
            ) -> Figure | None:
    """p50 / p90 / p99 latency per serving stage and arm, with the success rate in the label and
    each arm's SLA (``sla[arm][stage]``, ms) as a dashed line."""
    arms = [a for a, v in metrics["arms"].items() if v.get("latency_ms")]
    if not arms:
        return None
    stages = [s for s, v in metrics["arms"][arms[0]]["latency_ms"].items() if v]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for i, arm in enumerate(arms):
            q = metrics["arms"][arm]["latency_ms"][stage] or {}
            ok = (metrics["arms"][arm].get("success_rate") or {}).get(stage)
            ax.bar(np.arange(3) + i * 0.4, [q.get(k, np.nan) for k in ("p50", "p90", "p99")], 0.4,
                   color=_color(arm), label=f"{arm} (success {ok:.1%})" if ok is not None else arm)
            if sla and sla.get(arm, {}).get(stage):
                ax.axhline(sla[arm][stage], color=_color(arm), ls="--", lw=1,
                           label=f"{arm} SLA {sla[arm][stage]:g} ms")
        ax.set_xticks(np.arange(3) + 0.2 * (len(arms) - 1), ["p50", "p90", "p99"])
        ax.set(title=stage, ylabel="ms")
        ax.legend(fontsize=7)
    return save(fig, path)


def readiness_gates(summary: dict[str, Any], path: Path | None) -> Figure | None:
    """The readiness gate over several worlds: each family's excess-loss increase at the gate's
    distance, one dot per world, against the threshold (``sim.readiness.across_worlds``)."""
    if not summary:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(summary), 3.6))
    for x, s in enumerate(summary.values()):
        ys = [100 * v for v in s["increase"]["by_world"] if v is not None]
        ax.plot([x] * len(ys), ys, "o", alpha=0.7)
        if s["increase"]["median"] is not None:
            ax.plot([x - 0.2, x + 0.2], [100 * s["increase"]["median"]] * 2, color="black", lw=2)
    first = next(iter(summary.values()))
    ax.axhline(100 * first["threshold"], color="red", ls="--",
               label=f"gate: +{100 * first['threshold']:.0f}% at k={first['distance']}")
    ax.set_xticks(range(len(summary)),
                  [f"{f}\n{s['passes']} of {s['worlds']} pass" for f, s in summary.items()],
                  fontsize=8)
    ax.set(ylabel="excess loss increase (%)", title="Readiness gate across worlds")
    ax.legend(fontsize=8)
    return save(fig, path)


def skew_sweep(metrics: dict[str, Any], path: Path | None) -> Figure | None:
    """The offline skew sweep: change of log_mae and excess loss against version distance."""
    sweep = (metrics.get("offline") or {}).get("skew_sweep") or {}
    if not sweep:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for family, by_k in sweep.items():
        ks = sorted(int(k) for k in by_k)
        for ax, metric in zip(axes, ("log_mae", "excess_loss"), strict=True):
            clean = by_k["0"]["all"][metric] or 1.0
            ax.plot(ks, [100 * by_k[str(k)]["all"]["delta"][metric] / clean for k in ks],
                    marker="o", label=family)
    gates = [g for g in ((metrics.get("offline") or {}).get("skew_gate") or {}).values()
             if g.get("threshold") is not None]
    if gates:  # the readiness gate: excess loss at its distance may rise by up to the threshold
        g = gates[0]
        axes[1].plot([g["distance"]], [100 * g["threshold"]], marker="_", markersize=30,
                     color="red", mew=2, ls="none",
                     label=f"gate: +{100 * g['threshold']:.0f}% at k={g['distance']}")
    for ax, metric in zip(axes, ("log_mae", "excess_loss"), strict=True):
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="version distance k (query a, item a − k)",
               ylabel=f"{metric} change vs clean (%)", title=f"Skew sweep: {metric}")
        ax.legend()
    return save(fig, path)


def bench_detection(scores: dict[str, Any], path: Path | None) -> Figure | None:
    """The diagnosis benchmark's held-out half: each verdict's detection rate by the magnitude of
    its hazard (one panel per verdict with a hazard), with its false-alarm rate where the hazard
    is absent as a dashed line."""
    rates = scores["halves"]["held_out"]["rates"]
    keys = [k for k, r in rates.items() if r["by_magnitude"]]
    if not keys:
        return None
    cols = 4
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        bins = rates[key]["by_magnitude"]
        labels = [(f"{m['magnitude'][0]:.3g}-{m['magnitude'][1]:.3g}"
                   if isinstance(m["magnitude"], list) else f"{m['magnitude']:.3g}") for m in bins]
        ax.bar(range(len(bins)), [m["rate"] or 0.0 for m in bins], color="#4477aa")
        for i, m in enumerate(bins):
            ax.text(i, (m["rate"] or 0.0) + 0.03, f"{m['named']}/{m['worlds']}", ha="center",
                    fontsize=7)
        fa = rates[key]["false_alarm_all"]["rate"]
        if fa is not None:
            ax.axhline(fa, color="#cc3311", ls="--", lw=1, label=f"false alarms {fa:.0%}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(bins)), labels, fontsize=7, rotation=20)
        ax.set_ylim(0, 1.15)
        ax.set_title(key, fontsize=9)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.suptitle("Detection by magnitude (held-out half)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
