"""``metrics.json`` from a run's parquet logs (analysis after the run, never inside the loop).

Every key is documented in ``docs/outputs.md`` (its "metrics.json" section).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from sim.billing import billed_costs, cpa_to_target, money, revenue
from sim.clock import DAY_S
from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES, LATENCY_STAGES
from sim.delivery import pacing_tracking
from sim.recall import funnel_recall
from sim.results import ArmMetrics, Interval, to_json
from sim.scoring import calibration_ratio, log_loss, log_mae
from sim.stats import Ratio, concentration, lift, ratio, stratified_lift


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def _pred_metrics(clicks: pl.DataFrame, col: str) -> tuple[float | None, float | None]:
    if clicks.height == 0 or not clicks["conversion"].any():
        return None, None
    y, p = clicks["conversion"].to_numpy(), clicks[col].to_numpy().astype(float)
    return calibration_ratio(y, p), log_loss(y, p)


def _online_l1(imps: pl.DataFrame, clicks: pl.DataFrame) -> dict[str, float | None]:
    """The live L1's online metrics: calibration and log loss of its pCVR on clicks (against the
    drawn conversions) and ``l1_log_mae`` against L2's pCVR on the impressions shown, where L2
    served them (a fallback row's ``l2_pcvr`` is L1's own estimate, not a teacher)."""
    cal, ll = _pred_metrics(clicks, "l1_pcvr")
    taught = imps.filter(~pl.col("l2_fallback"))
    mae = (log_mae(taught["l1_pcvr"].to_numpy(), taught["l2_pcvr"].to_numpy())
           if taught.height else None)
    return {"l1_calibration": cal, "l1_logloss": ll, "l1_log_mae": mae}


def arm_metrics(logs: dict[str, pl.DataFrame], arm: str) -> dict[str, Any]:
    """An arm's money, delivery, online model metrics, daily figures and latency (the rest of
    :class:`sim.results.ArmMetrics` comes from the logs of versions, coverage, recall and the
    serving-path probe)."""
    imps = logs["impressions"].filter(pl.col("arm") == arm)
    clicks = logs["clicks"].filter(pl.col("arm") == arm)
    convs = logs["conversions"].filter(pl.col("arm") == arm)
    days = logs["budget_days"]
    l2_cal, l2_ll = _pred_metrics(clicks.filter(~pl.col("l2_fallback")), "l2_pcvr")
    out: dict[str, Any] = {
        **money(imps, convs),
        "delivered_spend": float(imps["delivered_cost"].sum()),
        "revenue": revenue(logs["impressions"], days, arm),
        "clicks": clicks.height, "impressions": imps.height,
        "ocpm_impression_share": _ratio(imps.filter(pl.col("objective") == "ocpm").height,
                                        imps.height),
        **_online_l1(imps, clicks),
        "l2_calibration": l2_cal, "l2_logloss": l2_ll,
        **cpa_to_target(imps, convs, logs["campaigns"].filter(
            pl.col("arm").is_in([arm, "shared"]))),
    }
    convs = convs.with_columns((pl.col("click_time") // DAY_S).cast(pl.Int32).alias("click_day"))
    daily = []
    for day in sorted(set(imps["day"].to_list())):
        di = imps.filter(pl.col("day") == day)
        dc = convs.filter(pl.col("click_day") == day)
        daily.append({"day": day, **money(di, dc), "impressions": di.height,
                      "clicks": int(di["click"].sum()),
                      **_online_l1(di, clicks.filter(pl.col("day") == day)),
                      "revenue": revenue(logs["impressions"].filter(pl.col("day") == day),
                                          days.filter(pl.col("day") == day), arm)})
    out["daily"] = daily
    reqs = logs["requests"].filter(pl.col("arm") == arm)
    if reqs.height == 0:  # an arm with no traffic (e.g. a ground-truth world at 0% or 100%)
        out["latency_ms"] = {stage: None for stage in LATENCY_STAGES}
        out["success_rate"] = {stage: None for stage in LATENCY_STAGES}
        return out
    out["latency_ms"] = {stage: {f"p{q}": float(cast(float, reqs[f"{stage}_ms"].quantile(q / 100, "linear")))
                                 for q in (50, 90, 99)} for stage in LATENCY_STAGES}
    out["success_rate"] = {stage: float(cast(float, reqs[f"{stage}_ok"].mean())) for stage in LATENCY_STAGES}
    return out


def feature_coverage(cov: pl.DataFrame, arm: str) -> dict[str, dict[str, float | None]]:
    """``{family: {artifact: share of served rows with the family present}}`` over the run."""
    rows = cov.filter(pl.col("arm") == arm)
    out: dict[str, dict[str, float | None]] = {}
    for family in FEATURE_FAMILIES:
        out[family] = {}
        for artifact in ARTIFACTS:
            r = rows.filter((pl.col("family") == family) & (pl.col("artifact") == artifact))
            n = int(r["rows"].sum())
            out[family][artifact] = int(r["present"].sum()) / n if n else None
    return out


def serving_path(sp: pl.DataFrame, arm: str, setup: dict[str, Any] | None = None) -> dict[str, Any]:
    """The serving-path probe's totals (``serving_path`` log, :mod:`sim.serving.probe`):
    ``ann_recall`` (share of the exact fp32 top-k the served search returned) and
    ``l1_score_error`` (mean |served - fp32| L1 logit over served candidates) at the arm's top
    level; under ``serving_path`` the signed mean error, L1's calibration on the probed live
    candidates from the served and from the fp32 logits, the requests probed, and ``setup``
    (the arm's index factory, nprobe and tower dtypes)."""
    a = sp.filter(pl.col("arm") == arm)
    t = {c: float(a[c].sum()) for c in ("requests", "exact", "recalled", "candidates", "abs_error",
                                         "error", "pcvr_served", "pcvr_exact", "true_pcvr")}
    return {"ann_recall": _ratio(t["recalled"], t["exact"]),
            "l1_score_error": _ratio(t["abs_error"], t["candidates"]),
            "serving_path": {"probed_requests": int(t["requests"]),
                             "l1_score_bias": _ratio(t["error"], t["candidates"]),
                             "l1_calibration_served": _ratio(t["pcvr_served"], t["true_pcvr"]),
                             "l1_calibration_exact": _ratio(t["pcvr_exact"], t["true_pcvr"]),
                             **(setup or {})}}


def _recall(cands: pl.DataFrame, arm: str, sizes: tuple[int, int] | None) -> dict[str, Any]:
    """The funnel recalls (``sim.recall.KEYS``) and ``recall_by_surface``."""
    if sizes is None:
        return {}
    r = funnel_recall(cands, arm, *sizes)
    return {**{k: v for k, v in r.items() if k != "by_surface"}, "recall_by_surface": r["by_surface"]}


def version_distance(vd: pl.DataFrame, arm: str) -> dict[str, Any]:
    """Share of live retrieved candidates by (query version - item version), overall and by tier."""
    rows = vd.filter(pl.col("arm") == arm)

    def shares(frame: pl.DataFrame) -> dict[str, float]:
        g = frame.group_by("distance").agg(pl.col("candidates").sum()).sort("distance")
        total = g["candidates"].sum()
        return {str(d): c / total for d, c in zip(g["distance"], g["candidates"], strict=True)}

    return {"all": shares(rows),
            "by_tier": {t: shares(rows.filter(pl.col("tier") == t))
                        for t in sorted(set(rows["tier"].to_list()))}}


def served_versions(imps: pl.DataFrame, releases: pl.DataFrame, arm: str,
                    rollout_delay_s: float, tick_s: float) -> dict[str, Any]:
    """The L1 checkpoints an arm served beside the ones its release log names.

    A tick's requests are served by the version live at the tick's start (the control plane runs
    before the traffic at an instant), so each impression is judged at its tick's start ``t``:
    the version due is the newest of the arm's L1 lineage released at ``t − rollout_delay_s`` or
    before (version 1 from the start). ``behind_share`` is the share of impressions served by
    an older one (a release pointer that lags, a rollout that never finished), ``mean_lag`` the
    mean number of versions behind; ``served_last`` the version of the arm's last impression,
    ``released_last`` the newest release (the version offline evaluation scores). Empty without
    impressions."""
    own = imps.filter(pl.col("arm") == arm).sort("time")
    rel = releases.filter(pl.col("lineage") == f"{arm}/l1").sort("time")
    if own.height == 0 or rel.height == 0:
        return {}
    times, versions = rel["time"].to_numpy(), rel["version"].to_numpy()
    start = np.floor(own["time"].to_numpy() / tick_s) * tick_s
    due = np.searchsorted(times, start - rollout_delay_s, side="right") - 1
    named = versions[np.maximum(due, 0)]
    served = own["query_version"].to_numpy()
    lag = np.maximum(named - served, 0)
    return {"behind_share": float((lag > 0).mean()), "mean_lag": float(lag.mean()),
            "served_last": int(served[-1]), "released_last": int(versions.max())}


RATIO_METRICS = {  # name -> (numerator, denominator) over observation cells (see ``cells``)
    "cpa": ("ocpm_spend", "ocpm_conversions"),
    "spend_per_request": ("spend", "requests"),
    "conversions_per_request": ("conversions", "requests"),
    "clicks_per_request": ("clicks", "requests"),
    "impressions_per_request": ("impressions", "requests"),
    "ocpm_impression_share": ("ocpm_impressions", "impressions"),
}


def impression_cells(imps: pl.DataFrame, n_adv: int) -> pl.DataFrame:
    """Per (user, advertiser): impressions, clicks, spend, oCPM impressions and spend. Summed in
    log order with numpy (a polars group-by sum of floats varies in its last digit)."""
    key = imps["user_id"].to_numpy().astype(np.int64) * n_adv + imps["advertiser_id"].to_numpy()
    cell, inv = np.unique(key, return_inverse=True)
    cost, ocpm = imps["cost"].to_numpy(), (imps["objective"] == "ocpm").to_numpy()

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(inv, weights=weights, minlength=cell.size)

    return pl.DataFrame({
        "user_id": pl.Series(cell // n_adv, dtype=imps.schema["user_id"]),
        "advertiser_id": pl.Series(cell % n_adv, dtype=imps.schema["advertiser_id"]),
        "impressions": pl.Series(total(), dtype=pl.UInt32),
        "clicks": pl.Series(total(imps["click"].to_numpy().astype(np.float64)), dtype=pl.UInt32),
        "spend": total(cost),
        "ocpm_impressions": pl.Series(total(ocpm.astype(np.float64)), dtype=pl.UInt32),
        "ocpm_spend": total(np.where(ocpm, cost, 0.0))})


def cells(logs: dict[str, pl.DataFrame], arm: str) -> pl.DataFrame:
    """An arm's observation cells for the ratio metrics: one row per (user, advertiser) with the
    user's impressions, clicks, spend and attributed conversions of that advertiser, and one row
    per user with their requests (its ``advertiser`` a pseudo id of its own, ``n_adv + user``)."""
    imps = logs["impressions"].filter(pl.col("arm") == arm)
    n_adv = int(cast(int, logs["budget_days"]["advertiser_id"].max() or 0)) + 1
    keys = ["user_id", "advertiser_id"]
    conv = (logs["conversions"].filter((pl.col("arm") == arm) & pl.col("attributed"))
            .join(imps.select("request_id", "ad_id", "user_id"), on=["request_id", "ad_id"]))
    is_ocpm = pl.col("objective") == "ocpm"
    agg_imps = impression_cells(imps, n_adv)
    agg_conv = conv.group_by(keys).agg(pl.len().alias("conversions"),
                                       is_ocpm.sum().alias("ocpm_conversions"))
    reqs = (logs["requests"].filter(pl.col("arm") == arm).group_by("user_id")
            .agg(pl.len().alias("requests"))
            .with_columns((pl.col("user_id") + n_adv).cast(pl.Int32).alias("advertiser_id")))
    by_ad = agg_imps.join(agg_conv, on=keys, how="full", coalesce=True)
    return (pl.concat([by_ad, reqs], how="diagonal_relaxed").fill_null(0)
            .sort(keys))  # group_by order varies: sort for reproducible sums


def _ratios(c: pl.DataFrame, clusters: str) -> dict[str, Ratio | None]:
    """Each ratio metric over an arm's observation cells (``cells``)."""
    user = c["user_id"].to_numpy()
    adv = c["advertiser_id"].to_numpy() if clusters == "user_advertiser" else None
    own = c["requests"].to_numpy() > 0  # a user's requests: an advertiser id of its own
    return {m: (ratio(c[y].to_numpy(), c[x].to_numpy(), user, adv, own) if c.height else None)
            for m, (y, x) in RATIO_METRICS.items()}


def intervals(logs: dict[str, pl.DataFrame], arms: list[str], clusters: str = "user_advertiser",
              arm_cells: dict[str, pl.DataFrame] | None = None) -> dict[str, Any]:
    """Per-arm 95% intervals of the ratio metrics and, with two arms, the lifts, clustered by
    user (``clusters="user"``) or by user and advertiser (``"user_advertiser"``; ``sim.stats``),
    and with advertiser clusters how concentrated the CPA lift's advertiser variance is
    (:func:`sim.stats.concentration`). ``arm_cells``: each arm's ``cells``, if already built."""
    arm_cells = arm_cells or {arm: cells(logs, arm) for arm in arms}
    ratios = {arm: _ratios(arm_cells[arm], clusters) for arm in arms}
    out: dict[str, Any] = {"ci": {a: {m: (r.interval() if r else None) for m, r in rs.items()}
                                  for a, rs in ratios.items()}}
    if len(arms) == 2:
        out["lift"] = {m: lift(ratios[arms[1]][m], ratios[arms[0]][m]) for m in RATIO_METRICS}
        if clusters == "user_advertiser":  # CPA's cells are (user, advertiser): real advertisers
            out["lift_concentration"] = {"cpa": concentration(ratios[arms[1]]["cpa"],
                                                              ratios[arms[0]]["cpa"])}
    return out


def _step_bounds(ramp: list[Any]) -> list[tuple[float, float]]:
    """Each ramp step's [start, end) in simulated seconds; the last step runs on."""
    days = [step.day for step in ramp]
    return [(d * DAY_S, nxt * DAY_S) for d, nxt in zip(days, [*days[1:], math.inf], strict=True)]


def ramp_strata(logs: dict[str, pl.DataFrame], arms: list[str], ramp: list[Any],
                clusters: str = "user_advertiser",
                arm_cells: dict[str, pl.DataFrame] | None = None) -> dict[str, Any]:
    """The lifts within each ramp step and stratified over the steps (two arms).

    A ramp gives the arms different mixes of steps (a treatment ramped 30% -> 60% has more of its
    traffic in the second step), so a pooled lift reads any difference between steps (a release,
    a day of the week, a market that settles) as a difference between arms. Within a step both
    arms see the same hours. ``lift_by_step[]``: per step its ``lift.<metric>`` (the step's
    impressions and requests, each impression's conversions) and ``weight.<metric>``, the step's
    share of the metric's denominator over both arms; ``lift_stratified.<metric>``: the steps'
    log lifts averaged with those weights, with a 95% interval (:func:`sim.stats.stratified_lift`).
    With one step it is the pooled lift. ``arm_cells``: each arm's ``cells`` over the whole run,
    if already built, for a step that spans it."""
    steps: list[dict[str, Any]] = []
    strata: dict[str, list[tuple[Ratio | None, Ratio | None]]] = {m: [] for m in RATIO_METRICS}
    mass: dict[str, list[float]] = {m: [] for m in RATIO_METRICS}
    for i, (step, (start, end)) in enumerate(zip(ramp, _step_bounds(ramp), strict=True)):
        if arm_cells is not None and start <= 0 and end == math.inf:  # the whole run
            c = arm_cells
        else:
            within = {n: logs[n].filter((pl.col("time") >= start) & (pl.col("time") < end))
                      for n in ("impressions", "requests")}
            c = {arm: cells(logs | within, arm) for arm in arms}
        r = {arm: _ratios(c[arm], clusters) for arm in arms}
        for m, (_, x) in RATIO_METRICS.items():
            strata[m].append((r[arms[1]][m], r[arms[0]][m]))
            mass[m].append(float(sum(c[a][x].sum() for a in arms if c[a].height)))
        steps.append({"step": i, "day": step.day, "share": step.share,
                      "lift": {m: lift(r[arms[1]][m], r[arms[0]][m]) for m in RATIO_METRICS}})
    for m in RATIO_METRICS:
        total = sum(mass[m])
        for st, w in zip(steps, mass[m], strict=True):
            st.setdefault("weight", {})[m] = w / total if total else None
    return {"lift_stratified": {m: stratified_lift(strata[m], mass[m]) for m in RATIO_METRICS},
            "lift_by_step": steps}


def exposure_readout(logs: dict[str, pl.DataFrame], arms: list[str],
                     ramp: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Online calibration and loss of each arm per ramp step: if exposure bias drove a gap, the
    treatment's numbers would improve as its share grows. Beside each estimate (against the drawn
    conversions) its truth, ``l1_calibration_true``: L1's pCVR over the true conversion
    probabilities of the same clicks, free of the draw's noise."""
    clicks = logs["clicks"]
    out: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        rows = []
        for i, (step, (start, end)) in enumerate(zip(ramp, _step_bounds(ramp), strict=True)):
            c = clicks.filter((pl.col("arm") == arm) & (pl.col("time") >= start)
                              & (pl.col("time") < end))
            l1_cal, l1_ll = _pred_metrics(c, "l1_pcvr")
            l2_cal, l2_ll = _pred_metrics(c.filter(~pl.col("l2_fallback")), "l2_pcvr")
            rows.append({"step": i, "day": step.day, "share": step.share, "clicks": c.height,
                         "conversions": int(c["conversion"].sum()),
                         "l1_calibration": l1_cal, "l1_logloss": l1_ll,
                         "l1_calibration_true": _ratio(float(c["l1_pcvr"].cast(pl.Float64).sum()),
                                                       float(c["true_pcvr"].sum())),
                         "l2_calibration": l2_cal, "l2_logloss": l2_ll})
        out[arm] = rows
    return out


def delayed_feedback(releases: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per L2 lineage, over its releases after start-up: the conversions of the clicks it trained
    on that were known when it trained, those still to come (trained as negatives), and the late
    share ``late / (known + late)``: the delayed-feedback bias of the labels, ground truth
    (``model_releases``: ``positives``, ``late_positives``)."""
    out: dict[str, dict[str, Any]] = {}
    rel = releases.filter((pl.col("kind") == "l2") & (pl.col("time") > 0))
    for lineage in sorted(set(rel["lineage"].to_list())):
        r = rel.filter(pl.col("lineage") == lineage)
        known, late = int(r["positives"].sum()), int(r["late_positives"].sum())
        out[lineage] = {"releases": r.height, "positives": known, "late_positives": late,
                        "late_share": late / (known + late) if known + late else None}
    return out


def totals(metrics: dict[str, Any]) -> dict[str, float | None]:
    """World totals over the arms of a run: spend, conversions, revenue, CPA (oCPM)."""
    arms = metrics["arms"].values()
    ocpm_spend = sum(a["ocpm_spend"] for a in arms)
    ocpm_conv = sum(a["ocpm_conversions"] for a in arms)
    return {"spend": sum(a["spend"] for a in arms),
            "conversions": sum(a["conversions"] for a in arms),
            "revenue": sum(a["revenue"] for a in arms),
            "cpa": ocpm_spend / ocpm_conv if ocpm_conv else None}


def ground_truth(experiment: dict[str, Any], none: dict[str, Any],
                 everyone: dict[str, Any]) -> dict[str, Any]:
    """The global treatment effect (all traffic treated vs none, relative) beside the experiment's
    lift estimate of the matching per-request metric, and the estimate's bias."""
    t0, t1 = totals(none), totals(everyone)
    est = experiment.get("lift", {})
    matching = {"cpa": "cpa", "conversions": "conversions_per_request",
                "spend": "spend_per_request", "revenue": "revenue_per_request"}
    out: dict[str, Any] = {"world_0": t0, "world_100": t1, "effects": {}}
    for metric, lift_key in matching.items():
        before, after = t0[metric], t1[metric]
        effect = after / before - 1.0 if before and after is not None else None
        estimate = (est.get(lift_key) or {}).get("estimate")
        out["effects"][metric] = {
            "global_effect": effect, "estimate": estimate, "estimated_by": lift_key,
            "bias": None if effect is None or estimate is None else estimate - effect}
    return out


def overspend(days: pl.DataFrame) -> dict[str, Any]:
    """Budget overspend per advertiser-day; ``max_tick_ratio`` <= 1 means within one tick."""
    over = days.filter(pl.col("overspend") > 0)
    ratio = (over["overspend"] / over["max_tick_spend"]).max() if over.height else 0.0
    return {"total": float(days["overspend"].sum()),
            "max": float(cast(float, days["overspend"].max() or 0.0)),
            "advertiser_days_over": over.height,
            "advertiser_days_capped": days.filter(pl.col("spend") >= pl.col("budget")).height,
            "advertiser_days": days.height, "max_tick_ratio": float(cast(float, ratio or 0.0))}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def summarize(run_dir: Path, arms: list[str], sim_days: float, ramp: list[Any] | None = None,
              extra: dict[str, Any] | None = None, clusters: str = "user_advertiser",
              funnel_sizes: dict[str, tuple[int, int]] | None = None,
              serving_setup: dict[str, dict[str, Any]] | None = None,
              rollout_delay: dict[str, float] | None = None,
              tick_s: float | None = None) -> dict[str, Any]:
    """Compute the metrics of a finished run from ``run_dir/logs``: the typed results (intervals,
    lifts) become ``metrics.json``'s dicts here (:func:`sim.results.to_json`). ``rollout_delay``
    (each arm's query rollout delay) and ``tick_s`` (the traffic tick) are what
    :func:`served_versions` needs; without them an arm's ``served_versions`` is empty."""
    names = ("impressions", "clicks", "conversions", "budget_days", "requests", "version_distance",
             "feature_coverage", "parity_audit", "candidates", "campaigns", "serving_path",
             "model_releases")
    logs = {n: pl.read_parquet(run_dir / "logs" / f"{n}.parquet") for n in names}
    logs["impressions"] = billed_costs(logs["impressions"], logs["budget_days"])
    arm_cells = {a: cells(logs, a) for a in arms}
    stats = intervals(logs, arms, clusters, arm_cells)
    per_arm = {a: ArmMetrics(**arm_metrics(logs, a) | {
        "version_distance": version_distance(logs["version_distance"], a),
        "feature_coverage": feature_coverage(logs["feature_coverage"], a),
        "parity_audit": logs["parity_audit"].filter(pl.col("arm") == a).drop("arm").to_dicts(),
        **_recall(logs["candidates"], a, (funnel_sizes or {}).get(a)),
        **serving_path(logs["serving_path"], a, (serving_setup or {}).get(a)),
        "served_versions": ({} if rollout_delay is None or tick_s is None else served_versions(
            logs["impressions"], logs["model_releases"], a, rollout_delay[a], tick_s)),
        "ci": stats["ci"][a]}) for a in arms}
    if "lift" in stats:  # revenue is billed per advertiser-day, not per user: a point estimate
        reqs = logs["requests"]
        rpr = {a: per_arm[a].revenue / max(reqs.filter(pl.col("arm") == a).height, 1)
               for a in arms}
        stats["lift"]["revenue_per_request"] = Interval(
            estimate=rpr[arms[1]] / rpr[arms[0]] - 1.0 if rpr[arms[0]] else None,
            low=None, high=None)
    return _clean(to_json({
        "arms": per_arm,
        **({"lift": stats["lift"]} if "lift" in stats else {}),
        **({"lift_concentration": stats["lift_concentration"]}
           if "lift_concentration" in stats else {}),
        **({"exposure": exposure_readout(logs, arms, ramp)} if ramp and len(arms) == 2 else {}),
        **(ramp_strata(logs, arms, ramp, clusters, arm_cells) if ramp and len(arms) == 2 else {}),
        "requests": logs["requests"]["request_id"].n_unique(),
        "sim_days": sim_days,
        "delayed_feedback": delayed_feedback(logs["model_releases"]),
        "overspend": overspend(logs["budget_days"]),
        "pacing": pacing_tracking(pl.read_parquet(run_dir / "logs" / "pacing.parquet"),
                                  logs["budget_days"]),
        **(extra or {}),
    }))
