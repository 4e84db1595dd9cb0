"""``report.md`` for one run: the gap, then the three layers, each hypothesis with its evidence
(a table, a plot) and its verdict. Pure text assembly from ``metrics.json``, the verdicts and
the names of the plots that were drawn."""

from __future__ import annotations

from typing import Any

from sim.report.evidence import (
    SOURCES,
    Gap,
    gap,
    offline_overall,
    served_family,
    stratified,
    two_arms,
)
from sim.report.formatting import detectable, interval, pct
from sim.report.rates import rate_line
from sim.report.retrospective import Observation
from sim.report.verdicts import CAUSE, NOT_MEASURABLE, Verdict

STATUS = {CAUSE: "**could explain the gap**", "ruled_out": "ruled out",
          NOT_MEASURABLE: "not measurable here"}


def _f(x: Any, fmt: str = ".3f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, fmt)
    return str(x)


def table(header: list[str], rows: list[list[Any]] | list[tuple[Any, ...]], fmt: str = ".3f") -> str:
    """A Markdown table; floats formatted with ``fmt``, None as n/a."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c, fmt) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(v: Verdict) -> str:
    arms = f" ({', '.join(v.arms)})" if v.arms else ""
    status = STATUS[v.status].strip("*")
    measured = rate_line(v.key)
    return (f"> **Verdict — {v.hypothesis}: {status}{arms}.**  \n"
            f"> Rule: {v.rule}.  \n> Found: {v.finding}."
            + (f"  \n> How often this rule is right, {measured}." if measured else ""))


def _plot(plots: set[str], name: str, caption: str) -> str:
    return f"![{caption}](plots/{name}.png)" if name in plots else f"*(no {caption} plot: no data)*"


def _gap_section(m: dict[str, Any], g: Gap) -> str:
    out = ["## The gap"]
    if g.relative:
        cpa = g.cpa_lift or {}
        out.append(
            f"Offline the treatment's L1 changes log_mae against the L2 teacher by "
            f"**{pct(g.offline)}** (`auction_winner`, the impressions shown); online the same "
            f"metric on the impressions it served changes by **{pct(g.online)}**: a gap of "
            f"**{pct(g.gap).rstrip('%')} points** (0 = online confirms offline). Online CPA lift: "
            f"**{pct(cpa.get('estimate'))}** (95% {pct(cpa.get('low'))} … {pct(cpa.get('high'))})"
            + (f"; compared within ramp steps, **{interval(stratified(m, 'cpa'))}**"
               if len(m.get("lift_by_step") or []) > 1 else "")
            + f". The smallest CPA change this design detects (80% power, 5% two-sided): "
              f"{detectable(stratified(m, 'cpa'))}.")
        rows = []
        for arm in ("control", "treatment"):
            a = m["arms"][arm]
            rows.append([arm, served_family(m, arm), *[
                (offline_overall(m, arm, s) or {}).get("log_mae") for s in SOURCES],
                a.get("l1_log_mae"), a.get("cpa"), a.get("conversions"),
                a.get("ocpm_impression_share")])
        out.append(table(["arm", "L1 family", *[f"offline log_mae {s}" for s in SOURCES],
                           "online l1_log_mae", "CPA", "conversions", "oCPM imp. share"], rows))
        lifts, strat = m.get("lift") or {}, m.get("lift_stratified") or {}
        out.append(table(["online lift", "estimate", "95% low", "95% high",
                          "stratified by ramp step (95%)", "detectable (80% power)"],
                          [[k, pct(v.get("estimate")), pct(v.get("low")), pct(v.get("high")),
                            interval(strat.get(k)) if k in strat else "n/a",
                            detectable(strat.get(k) if k in strat else v)]
                           for k, v in lifts.items() if v]))
        if len(m.get("lift_by_step") or []) > 1:
            out.append("Pooled lifts read a difference between ramp steps as one between arms "
                       "(the arms hold the steps in different proportions); the stratified "
                       "column compares the arms within each step. Per step: " + "; ".join(
                           f"day {st['day']:g} ({pct(st['share'], signed=False)} treatment): CPA "
                           f"{interval((st.get('lift') or {}).get('cpa'))}"
                           for st in m["lift_by_step"]) + ".")
        conc = (m.get("lift_concentration") or {}).get("cpa")
        if conc:
            out.append(_concentration(conc))
    else:
        arm = next(iter(m["arms"]))
        out.append(f"One arm (`{arm}`): offline L1 log_mae on `auction_winner` {_f(g.offline)}, "
                   f"online on the impressions served {_f(g.online)} (gap {_f(g.gap)}). "
                   f"CPA {_f(m['arms'][arm].get('cpa'))}.")
    out.append(_cpa_to_target(m))
    return "\n\n".join(out)


def _concentration(c: dict[str, Any]) -> str:
    """Who sets the CPA lift's interval: its advertiser variance, by advertiser."""
    ids = ", ".join(str(a) for a in c["top"])
    return (f"Who sets the CPA lift's interval: of its advertiser-clustered variance, the largest "
            f"advertiser carries {pct(c['top1_share'], signed=False)} and the top three ({ids}) "
            f"{pct(c['top3_share'], signed=False)}, of {c['advertisers']} advertisers with oCPM "
            f"spend or conversions. Where a few advertisers carry most of it, more traffic does not "
            f"narrow the interval; seeds do (`replicates=N`: each draws its own advertisers).")


def _cpa_to_target(m: dict[str, Any]) -> str:
    """What oCPM advertisers see: realised CPA over their target, overall and its spread."""
    rows = []
    for arm, a in m["arms"].items():
        q = a.get("ocpm_cpa_to_target_quantiles") or {}
        rows.append([arm, a.get("ocpm_cpa_to_target"), q.get("advertisers"), q.get("p10"),
                     q.get("p50"), q.get("p90")])
    return ("What oCPM advertisers see: realised CPA over target CPA (Σ spend / Σ conversions × "
            "target; 1 = on target), and its spread over advertisers with ≥ 5 conversions.\n\n"
            + table(["arm", "CPA / target", "advertisers", "p10", "p50", "p90"], rows, ".2f"))


def _offline_section(m: dict[str, Any]) -> str:
    rows = []
    for arm in m.get("offline", {}).get("models") or {}:
        for s in SOURCES:
            o = offline_overall(m, arm, s) or {}
            rows.append([arm, s, o.get("rows"), o.get("log_mae"), o.get("log_loss"),
                         o.get("normalized_entropy"), o.get("calibration")])
    return table(["arm", "source", "rows", "log_mae", "log_loss", "NE", "calibration"], rows)


def _exposure_section(m: dict[str, Any]) -> str:
    rows = [[arm, world, s["step"], s["day"], pct(s["share"], False), s["clicks"],
             s.get("conversions"), s["l1_calibration"], s["l1_logloss"], s["l2_calibration"]]
            for key, world in (("exposure", "ramp"), ("exposure_twin", "share held"))
            for arm, steps in (m.get(key) or {}).items() for s in steps]
    if not rows:
        return "No ramp read-out (one arm)."
    return table(["arm", "world", "step", "day", "share", "clicks", "conversions",
                  "L1 calibration", "L1 log loss", "L2 calibration"], rows) + (
        "" if m.get("exposure_twin") else
        "\n\nNo exposure twin (`experiment.exposure_twin=true` runs one): the days change the "
        "models as the share grows, so the ramp alone cannot say which moved the calibration.")


def _latency_section(m: dict[str, Any]) -> str:
    rows = []
    for arm, a in m["arms"].items():
        for stage, q in (a.get("latency_ms") or {}).items():
            if q:
                rows.append([arm, stage, q["p50"], q["p90"], q["p99"],
                             pct((a.get("success_rate") or {}).get(stage), False)])
    return table(["arm", "stage", "p50 ms", "p90 ms", "p99 ms", "success"], rows)


def _coverage_section(m: dict[str, Any]) -> str:
    rows = []
    for arm, a in m["arms"].items():
        for family, by_art in (a.get("feature_coverage") or {}).items():
            rows.append([arm, family, *[pct(v, False) if v is not None else "n/a"
                                        for v in by_art.values()]])
    arts = list(next(iter(m["arms"].values())).get("feature_coverage", {}).get("base", {}))
    audit = [[arm, r["family"], r["artifact"], pct(r["offline_coverage"], False),
              pct(r["online_coverage"], False), r.get("log_loss_increase"), r.get("log_mae_increase")]
             for arm, a in m["arms"].items() for r in a.get("parity_audit") or []]
    parts = [table(["arm", "family", *arts], rows), "Parity audit (most important first):"]
    parts.append(table(["arm", "family", "missing in", "offline coverage", "online coverage",
                         "importance (log loss, nats)", "importance (log_mae)"], audit)
                 if audit else "The audit lists no family.")
    return "\n\n".join(parts)


def _skew_section(m: dict[str, Any]) -> str:
    rows = []
    for arm, a in m["arms"].items():
        shares = (a.get("version_distance") or {}).get("all") or {}
        rows.append([arm, ", ".join(f"{k}: {pct(v, False)}" for k, v in
                                    sorted(shares.items(), key=lambda kv: int(kv[0])))])
    out = [table(["arm", "share of live retrieved candidates by version distance"], rows)]
    sweep = (m.get("offline") or {}).get("skew_sweep") or {}
    srows = []
    for family, by_k in sweep.items():
        for k in sorted(by_k, key=int):
            al = by_k[k]["all"]
            srows.append([family, k, al["anchors"], al["log_mae"], al["delta"]["log_mae"],
                          al["excess_loss"], al["delta"]["excess_loss"]])
    if srows:
        out.append(table(["family", "distance", "anchors", "log_mae", "Δ log_mae", "excess loss",
                           "Δ excess loss"], srows))
    gate = (m.get("offline") or {}).get("skew_gate") or {}
    if gate:
        out.append("Readiness gate: " + "; ".join(
            f"`{f}` {g['result']} (excess-loss increase at distance {g['distance']}: "
            f"{pct(g['increase'])}, threshold {pct(g['threshold'])})"
            for f, g in gate.items() if g.get("increase") is not None))
    return "\n\n".join(out)


def _serving_section(m: dict[str, Any]) -> str:
    rows = []
    for arm, a in m["arms"].items():
        sp = a.get("serving_path") or {}
        if a.get("ann_recall") is None:
            continue
        lookup = (a.get("latency_ms") or {}).get("item_lookup") or {}
        rows.append([arm, sp.get("index_factory", "?"), sp.get("nprobe", "?"),
                     f"{sp.get('query_dtype', '?')} / {sp.get('item_dtype', '?')}",
                     _f(a["ann_recall"]), _f(a.get("l1_score_error"), ".4f"),
                     _f(sp.get("l1_score_bias"), "+.4f"),
                     f"{_f(sp.get('l1_calibration_served'))} / {_f(sp.get('l1_calibration_exact'))}",
                     _f(lookup.get("p99"), ".2f"),
                     pct((a.get("success_rate") or {}).get("item_lookup"), False)])
    if not rows:
        return "No serving-path probe in this run."
    note = ("On the probed requests (`serving.probe_requests_per_hour`), each served retrieval "
            "and L1 logit is compared with the exact fp32 path over the same deployed rows: "
            "`ann_recall` is the share of the exact top-k the served search returned, the score "
            "error is |served − fp32| L1 logit over served candidates, and L1 calibration is the "
            "probed live candidates' mean L1 pCVR over the true one, from the served and the fp32 "
            "logits.")
    return table(["arm", "index", "nprobe", "query / item dtype", "ann_recall",
                  "l1_score_error", "signed error", "L1 calibration served / fp32",
                  "item lookup p99 ms", "item lookup success"], rows) + "\n\n" + note


def _recall_section(m: dict[str, Any]) -> str:
    kinds = ("retrieval_recall", "ranking_recall", "headroom_retrieval_recall",
             "headroom_ranking_recall", "oracle_retrieval_recall", "oracle_ranking_recall")
    rows = []
    for arm, a in m["arms"].items():
        if a.get("retrieval_recall") is None:
            continue
        rows.append([arm, "all", *[a.get(k) for k in kinds]])
        for s, r in (a.get("recall_by_surface") or {}).items():
            rows.append([arm, s, *[r.get(k) for k in kinds]])
    note = ("`headroom_*`: the recall of an L1 whose pCVR were L2's (same pCTR prior and bids) — "
            "what a better L1 CVR model could reach; `oracle_*`: against the true utility.")
    return (table(["arm", "surface", *kinds], rows) + "\n\n" + note) if rows else "No full-request log."


def _versions_section(m: dict[str, Any]) -> str:
    rows = [[arm, (a.get("served_versions") or {}).get("behind_share"),
             (a.get("served_versions") or {}).get("mean_lag"),
             (a.get("served_versions") or {}).get("served_last"),
             (a.get("served_versions") or {}).get("released_last")]
            for arm, a in m["arms"].items() if a.get("served_versions")]
    if not rows:
        return "No served-version records."
    return (table(["arm", "impressions served behind the release log", "mean versions behind",
                   "version serving at the end", "newest release (evaluated)"], rows)
            + "\n\nEach impression's query-tower version against the version due at the start of "
            "its tick: the newest L1 version released at least the query rollout delay before "
            "(`metrics.json` `arms.<arm>.served_versions`).")


def _delayed_section(m: dict[str, Any]) -> str:
    rows = [[lineage, d["releases"], d["positives"], d["late_positives"], d["late_share"]]
            for lineage, d in (m.get("delayed_feedback") or {}).items()]
    if not rows:
        return "No release after start-up."
    return (table(["L2 lineage", "releases", "conversions known at training",
                   "conversions still to come", "late share"], rows)
            + "\n\nEach release trains on clicks whose conversions have not all arrived: those "
            "still to come are trained as negatives, so a model "
            "fit to them predicts below the truth, by about the late share on average. A "
            "longer label wait (`releases.label_wait_s`) or a shorter delay shrinks it; ground "
            "truth, from the simulator's own conversion times (`metrics.json` "
            "`delayed_feedback`).")


def _attribution_section(m: dict[str, Any]) -> str:
    att = m.get("attribution")
    if not att:
        return ("Not computed. `python -m sim.report RUN_DIR --attribute` re-runs this world with "
                "each hazard switched off (common random numbers) and adds it here.")
    switches = "; ".join(f"`{h}` off = {how}" for h, how in att["switch_off"].items())
    out = [f"Hazards present and switched: {', '.join(att['hazards']) or 'none'} ({switches}); "
           f"{len(att['worlds'])} worlds (the run itself is the one with all on). "
           "Shapley values: each hazard's average marginal effect over the orders in which the "
           "hazards can be switched on; they sum to all-on − all-off."]
    for name, o in att["outcomes"].items():
        if o is None:
            out.append(f"**{name}**: not defined in every world.")
            continue
        rows = [[h, o["shapley"][h], o["one_off"].get(h)] for h in att["hazards"]]
        out.append(f"**{name}** ({o['description']}): all hazards on {_f(o['all_on'])}, all off "
                   f"{_f(o['all_off'])}.")
        out.append(table(["hazard", "Shapley value", "value with only this one off"], rows))
    return "\n\n".join(out)


def _retrospective_section(obs: list[Observation]) -> str:
    if not obs:
        return "*(one arm: nothing to compare with the retrospective)*"
    mark = {True: "yes", False: "**no**", None: "n/a"}
    shown = sum(o.holds is True for o in obs)
    return (f"Does this run show what the retrospective reported? {shown} of {len(obs)}.\n\n"
            + table(["the retrospective reported", "shown here", "this run"],
                    [[o.claim, mark[o.holds], o.measured] for o in obs]))


def render(m: dict[str, Any], verdicts: list[Verdict], plots: set[str], title: str,
           observations: list[Observation] | None = None) -> str:
    """The report's Markdown."""
    by = {v.key: v for v in verdicts}
    named = [v for v in verdicts if v.named]
    glance = table(["layer", "hypothesis", "verdict", "arms"],
                    [[v.layer, v.hypothesis, STATUS[v.status], ", ".join(v.arms)] for v in verdicts])
    arms = ", ".join(m["arms"])
    parts = [
        f"# Online/offline report: {title}",
        f"Arms: {arms}; {m.get('requests')} requests over {m.get('sim_days')} simulated days"
        + ("" if two_arms(m) else " (one arm: the verdicts that compare arms are not measurable)") + ".",
        _gap_section(m, gap(m)), _plot(plots, "gap", "offline against online changes"),
        "## Verdicts at a glance", glance,
        ("Causes named: " + ", ".join(f"**{v.key}**" for v in named) + "."
         if named else "**No cause named.**"),
        "## Layer 1 — is the measurement right?",
        "### Offline evaluation by log source and pCVR decile", _offline_section(m),
        _plot(plots, "calibration_by_decile", "calibration by decile"), _verdict(by["offline_eval"]),
        "### Label leakage: features as logged against features as of the request",
        _verdict(by["label_leakage"]),
        "### Outlier domination: how many rows carry the offline win",
        _verdict(by["outlier_domination"]),
        "### Delayed feedback: conversions not yet arrived at training", _delayed_section(m),
        "### Exposure bias: the ramp read-out", _exposure_section(m),
        _plot(plots, "exposure", "exposure read-out"), _verdict(by["exposure_bias"]),
        "### Latency and timeouts", _latency_section(m), _plot(plots, "latency", "latency"),
        _verdict(by["timeouts"]),
        "### Traffic: could the CPA read-out be noise?", _verdict(by["traffic"]),
        "## Layer 2 — does serving see what training saw?",
        "### Feature coverage and the parity audit", _coverage_section(m),
        _plot(plots, "coverage", "coverage over time"), _verdict(by["parity_gap"]),
        "### Embedding version skew", _skew_section(m),
        _plot(plots, "version_distance", "version distance over time"),
        _plot(plots, "skew_sweep", "skew sweep"), _verdict(by["version_skew"]),
        "### Serving path: index and precision against the fp32 offline path",
        _serving_section(m), _plot(plots, "serving_path", "serving path per hour"),
        _verdict(by["serving_path"]),
        "### Model versions: what served against what was evaluated", _versions_section(m),
        _verdict(by["model_version"]),
        "## Layer 3 — can the funnel and the auction turn a better L1 into CPA?",
        "### Funnel recall", _recall_section(m), _plot(plots, "recall", "recall per arm"),
        _verdict(by["recall_ceiling"]),
        "### Metric mismatch: offline log_mae against online CPA",
        _plot(plots, "cpa_daily", "CPA per day"), _verdict(by["metric_mismatch"]),
        "### Mix shift: oCPM impression share", _verdict(by["mix_shift"]),
        "## Attribution", _attribution_section(m),
        "## The retrospective, point by point", _retrospective_section(observations or []),
    ]
    return "\n\n".join(parts) + "\n"
