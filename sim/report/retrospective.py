"""The retrospective, point by point: does this run show what the retrospective reported?

The retrospective adsim reproduces (Pinterest's "Bridging the Gap" on its L1 CVR models, 2026;
summarised in ``docs/retrospective.md``) reports what a new L1 CVR model did against
production, observation by observation. :func:`observations` states each one as a check on a
two-arm run's ``metrics.json`` and says whether the run shows it. The headline scenario
(``scenarios/l1_cvr_discrepancy.yaml``) is meant to show them; any two-arm run can be compared.
The checks read the same numbers and verdicts as the rest of the report; they are descriptions of
a run, not inputs to anything.

* offline: a 20-45% ``log_mae`` reduction on every log source;
* offline: better calibration (|ln calibration| against the truth) in every decile of the L2
  teacher's pCVR, on every log source;
* online: CPA neutral or slightly worse (not significantly lower);
* online: more oCPM impressions (a positive oCPM impression share lift);
* exposure bias and timeouts ruled out (their verdicts);
* a parity gap in the L1 embedding path (the parity verdict names the treatment);
* version skew that hurts the new family more (the skew verdict names the treatment, whose
  predicted increase exceeds the control's);
* a recall ceiling on some surface: an offline win, and a surface where neither recall moved
  by ``RECALL_MOVE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.report.evidence import (
    SOURCES,
    lift,
    offline_change,
    offline_win,
    significant,
    skew_cost,
    skew_expectation,
    stratified,
    two_arms,
)
from sim.report.verdicts import (
    CAUSE,
    NOT_MEASURABLE,
    OFFLINE_WIN,
    RECALL_MOVE,
    RULED_OUT,
    Verdict,
    interval,
    pct,
)

OFFLINE_RANGE = (0.20, 0.45)  # the retrospective's offline log_mae reduction


@dataclass(frozen=True, kw_only=True)
class Observation:
    claim: str  # what the retrospective reported
    measured: str  # what this run shows
    holds: bool | None  # None: the run cannot show it (e.g. one arm)


def _offline_range(m: dict[str, Any]) -> Observation:
    lo, hi = OFFLINE_RANGE
    change = offline_change(m)
    known = [c for c in change.values() if c is not None]
    holds = bool(known) and len(known) == len(change) and all(lo <= -c <= hi for c in known)
    return Observation(claim=f"offline: a {lo:.0%}-{hi:.0%} log_mae reduction on every log source",
                       measured=", ".join(f"{s} {pct(c)}" for s, c in change.items()), holds=holds)


def _miscalibration(row: dict[str, Any]) -> float:
    c = row.get("calibration")
    return abs(math.log(c)) if c and c > 0 else math.inf


def _calibration_deciles(m: dict[str, Any]) -> Observation:
    models = m.get("offline", {}).get("models", {})
    parts, holds = [], True
    for s in SOURCES:
        c = ((models.get("control") or {}).get("sources", {}).get(s) or {}).get("deciles") or []
        t = ((models.get("treatment") or {}).get("sources", {}).get(s) or {}).get("deciles") or []
        by_c = {r["decile"]: r for r in c}
        pairs = [(by_c[r["decile"]], r) for r in t if r["decile"] in by_c]
        better = sum(_miscalibration(rt) < _miscalibration(rc) for rc, rt in pairs)
        parts.append(f"{s} {better}/{len(pairs)} deciles")
        holds = holds and bool(pairs) and better == len(pairs)
    return Observation(claim="offline: better calibration in every pCVR decile",
                       measured="treatment closer to 1 in " + ", ".join(parts), holds=holds)


def _cpa(m: dict[str, Any]) -> Observation:
    cpa = stratified(m, "cpa")  # within ramp steps: a ramp's mix of days is not an effect
    est = (cpa or {}).get("estimate")
    holds = None if est is None else not (significant(cpa) and est < 0)
    return Observation(claim="online: neutral or slightly worse CPA (no significant CPA win)",
                       measured=f"CPA lift stratified by ramp step {interval(cpa)} (pooled "
                                f"{interval(lift(m, 'cpa'))})", holds=holds)


def _ocpm(m: dict[str, Any]) -> Observation:
    share = stratified(m, "ocpm_impression_share")
    est = (share or {}).get("estimate")
    measured = f"oCPM impression share lift stratified by ramp step {interval(share)}" + (
        " (significant)" if significant(share) else "")
    return Observation(claim="online: more oCPM impressions than production", measured=measured,
                       holds=None if est is None else est > 0)


def _ruled_out(v: Verdict, claim: str) -> Observation:
    """Holds if the verdict rules its cause out; n/a where the run cannot measure it."""
    return Observation(claim=claim, measured=f"{v.status.replace('_', ' ')}: {v.finding}",
                       holds=None if v.status == NOT_MEASURABLE else v.status == RULED_OUT)


def _named(v: Verdict, claim: str) -> Observation:
    arms = f" ({', '.join(v.arms)})" if v.arms else ""
    return Observation(claim=claim, measured=f"{v.status.replace('_', ' ')}{arms}: {v.finding}",
                       holds=v.status == CAUSE and "treatment" in v.arms)


def _skew(m: dict[str, Any], v: Verdict) -> Observation:
    e = {arm: skew_expectation(m, arm) for arm in ("control", "treatment")}
    measured = "; ".join(f"{arm} predicted log_mae {pct(e[arm]['log_mae'])}, excess loss "
                         f"{pct(e[arm]['excess_loss'])}" for arm in e)
    holds = (v.status == CAUSE and "treatment" in v.arms
             and skew_cost(e["treatment"]) > skew_cost(e["control"]))
    return Observation(claim="version skew present, hurting the new family more than production",
                       measured=measured, holds=holds)


def _recall_surface(m: dict[str, Any]) -> Observation:
    c = m["arms"]["control"].get("recall_by_surface") or {}
    t = m["arms"]["treatment"].get("recall_by_surface") or {}
    flat, parts = [], []
    for surface in c:
        if surface not in t:
            continue
        moves = [(t[surface].get(k) or 0.0) - (c[surface].get(k) or 0.0)
                 for k in ("retrieval_recall", "ranking_recall")]
        parts.append(f"{surface} retrieval {moves[0]:+.3f}, ranking {moves[1]:+.3f}")
        if all(abs(x) < RECALL_MOVE for x in moves):
            flat.append(surface)
    claim = (f"a recall ceiling on some surface: an offline win (>= {OFFLINE_WIN:.0%}) and a "
             f"surface where neither recall moves by {RECALL_MOVE}")
    if not parts:
        return Observation(claim=claim, measured="no recall by surface", holds=None)
    win = offline_win(m)
    return Observation(claim=claim, measured=f"offline win {pct(win)}; " + "; ".join(parts)
                       + f"; flat: {', '.join(flat) or 'none'}",
                       holds=bool(flat) and win is not None and win >= OFFLINE_WIN)


def observations(m: dict[str, Any], verdicts: list[Verdict]) -> list[Observation]:
    """The retrospective's observations checked on a two-arm run (empty for one arm)."""
    if not two_arms(m):
        return []
    by = {v.key: v for v in verdicts}
    return [
        _offline_range(m), _calibration_deciles(m), _cpa(m), _ocpm(m),
        _ruled_out(by["exposure_bias"], "exposure bias ruled out (the gap does not close as the "
                   "share grows)"),
        _ruled_out(by["timeouts"], "timeouts ruled out (no materially worse tail)"),
        _named(by["parity_gap"], "a feature parity gap in the L1 embedding path"),
        _skew(m, by["version_skew"]), _recall_surface(m),
    ]


__all__ = ["Observation", "observations", "OFFLINE_RANGE"]
