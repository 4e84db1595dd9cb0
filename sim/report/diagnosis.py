"""The diagnosis benchmark's scores: each verdict's detection and false-alarm rates on a library
of worlds with known causes, the thresholds chosen on its calibration half, and the document
(``sim/diagnosis_bench.py`` draws and runs the library; the module docstring there states the
distributions and the scores)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import numpy as np

from sim.report import verdicts as V
from sim.report.evidence import stratified
from sim.report.verdicts import CAUSE, NOT_MEASURABLE, verdicts


class BenchWorld(Protocol):
    """What scoring reads of a library's world (``sim.diagnosis_bench.BenchWorld``)."""

    @property
    def half(self) -> str: ...  # "calibration" or "held_out"
    @property
    def design(self) -> str: ...  # "aa" or "ab"
    @property
    def hazards(self) -> dict[str, float]: ...  # present hazard -> magnitude
    @property
    def dormant(self) -> tuple[str, ...]: ...  # injected, not present

# the hazards the library injects (each A/B world with hazards draws each one)
HAZARDS = ("timeouts", "parity_gap", "version_skew", "serving_path", "model_version",
           "recall_ceiling", "label_leakage", "outlier_domination")
# hazards the library does not inject but measures (exposure bias: in ramped worlds, from the
# true calibration under the ramp and in its twin)
MEASURED = ("exposure_bias",)
# each verdict and the hazard it names (verdicts without one are scored for how often they fire)
VERDICT_HAZARD = {h: h for h in (*HAZARDS, *MEASURED)}


def statuses(m: dict[str, Any] | None) -> dict[str, str] | None:
    """Each verdict's status on a run's metrics (None for a run that did not complete)."""
    return None if m is None else {v.key: v.status for v in verdicts(m)}



THRESHOLDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "timeouts": ("TIMEOUT_EXCESS", (0.005, 0.01, 0.02, 0.05, 0.1)),
    "parity_gap": ("PARITY_LOG_MAE", (0.005, 0.01, 0.02, 0.05, 0.1)),
    "version_skew": ("SKEW_INCREASE", (0.01, 0.02, 0.05, 0.1, 0.2)),
    "serving_path": ("ANN_RECALL", (0.8, 0.9, 0.95, 0.98, 0.99)),
    "model_version": ("VERSION_BEHIND", (0.01, 0.02, 0.05, 0.1, 0.2)),
    "recall_ceiling": ("RECALL_MOVE", (0.005, 0.01, 0.02, 0.05, 0.1)),
    "label_leakage": ("LEAK_CREDIT", (0.0025, 0.005, 0.01, 0.02, 0.05)),
    "outlier_domination": ("OUTLIER_KEPT", (0.25, 0.5, 0.75)),
    # the closing that counts is the ground truth's (EXPOSURE_CLOSE = EXPOSURE_TRUE, 0.05); what
    # is calibrated is how many standard errors the estimate must clear
    "exposure_bias": ("EXPOSURE_Z", (0.5, 1.0, 1.5, 2.0, 3.0)),
}
MAX_FALSE_ALARM = 0.05  # the calibration rule's bound on a threshold's false-alarm rate


@contextmanager
def threshold(name: str, value: float) -> Iterator[None]:
    """The verdict rules with their constant ``name`` set to ``value`` inside the block."""
    old = getattr(V, name)
    setattr(V, name, value)
    try:
        yield
    finally:
        setattr(V, name, old)


def calibrate(worlds: Sequence[BenchWorld], metrics: Sequence[dict[str, Any] | None],
              half: str = "calibration") -> dict[str, Any]:
    """Each verdict's threshold chosen on the worlds of ``half`` by the written rule: among the
    values of :data:`THRESHOLDS`, the one with the highest detection rate of the verdict's own
    hazard whose false-alarm rate (the worlds without the hazard where the verdict is
    measurable, every kind together) is at most :data:`MAX_FALSE_ALARM`; ties go to the fewer
    false alarms, then to the value nearest (in ratio) the one the rules ship with. If no value
    keeps false alarms that low, the one with the fewest."""
    rows = [(w, m) for w, m in zip(worlds, metrics, strict=True) if m is not None and w.half == half]
    out: dict[str, Any] = {}
    for key, (name, values) in THRESHOLDS.items():
        if key not in VERDICT_HAZARD:
            continue
        hazard = VERDICT_HAZARD[key]
        current = getattr(V, name)
        table = []
        for value in sorted({*values, current}):
            with threshold(name, value):
                st = [(hazard in w.hazards, statuses(m)[key]) for w, m in rows]  # type: ignore[index]
            present = [s == CAUSE for h, s in st if h]
            absent = [s == CAUSE for h, s in st if not h and s != NOT_MEASURABLE]
            table.append({"value": value, "detection": _rate(sum(present), len(present)),
                          "false_alarm": _rate(sum(absent), len(absent))})
        chosen = max(table, key=functools.partial(_rank, current=current))
        out[key] = {"constant": name, "current": current, "chosen": chosen["value"],
                    "table": table}
    return out


def _rank(r: dict[str, Any], current: float) -> tuple[Any, ...]:
    """The calibration rule's order of a threshold's row (the largest is chosen)."""
    fa = r["false_alarm"]["rate"] or 0.0
    ok = fa <= MAX_FALSE_ALARM
    return (ok, (r["detection"]["rate"] or 0.0) if ok else -fa, -fa,
            -abs(math.log(r["value"] / current)))


def rescored(worlds: Sequence[BenchWorld], metrics: Sequence[dict[str, Any] | None],
             chosen: dict[str, float]) -> dict[str, Any]:
    """:func:`score` with the rules' constants set to ``chosen`` (constant name -> value)."""
    with ExitStack() as stack:
        for name, value in chosen.items():
            stack.enter_context(threshold(name, value))
        return score(worlds, [statuses(m) for m in metrics])


def _rate(hits: int, n: int) -> dict[str, Any]:
    return {"named": hits, "worlds": n, "rate": hits / n if n else None}


def score(worlds: Sequence[BenchWorld], results: Sequence[dict[str, str] | None]) -> dict[str, Any]:
    """Each verdict's rates on each half of the library (see the module docstring)."""
    out: dict[str, Any] = {"worlds": len(worlds), "failed": sum(r is None for r in results),
                           "halves": {}}
    for half in ("calibration", "held_out"):
        rows = [(w, r) for w, r in zip(worlds, results, strict=True) if r is not None and w.half == half]
        keys = list(rows[0][1]) if rows else []
        kinds = {kind: [r for w, r in rows if kind_of(w) == kind]
                 for kind in ("aa", "ab_clean", "ab_hazards")}
        fires = {k: {kind: _rate(sum(r[k] == CAUSE for r in rs), len(rs)) for kind, rs in kinds.items()}
                 for k in keys}
        rates: dict[str, Any] = {}
        for key, hazard in VERDICT_HAZARD.items():
            if key not in keys:
                continue
            present = [(w.hazards[hazard], r[key] == CAUSE) for w, r in rows if hazard in w.hazards]
            # a world where the verdict cannot be measured cannot raise a false alarm: it is
            # left out of the false-alarm rates (a world with the hazard where it cannot be
            # measured counts as a miss)
            absent = {kind: [r[key] == CAUSE for w, r in rows
                             if hazard not in w.hazards and kind_of(w) == kind
                             and r[key] != NOT_MEASURABLE]
                      for kind in ("aa", "ab_clean", "ab_hazards")}
            rates[key] = {
                "detection": _rate(sum(f for _, f in present), len(present)),
                "by_magnitude": _by_magnitude(present),
                "false_alarm": {k: _rate(sum(v), len(v)) for k, v in absent.items()},
                "false_alarm_all": _rate(sum(sum(v) for v in absent.values()),
                                         sum(len(v) for v in absent.values()))}
        confusion = {h: {k: _cross(rows, h, k) for k in keys} for h in (*HAZARDS, *MEASURED)}
        out["halves"][half] = {"worlds": len(rows), "fires": fires, "rates": rates,
                               "confusion": confusion}
    return out


def aa_coverage(worlds: Sequence[BenchWorld],
                metrics: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """In the A/A worlds of each half (no effect by construction), how often the CPA lift's 95%
    interval (stratified by ramp step) covers 0: the honesty of every "could be noise". A
    world whose interval is undefined is counted apart (``undefined``)."""
    out: dict[str, Any] = {}
    for half in ("calibration", "held_out"):
        aa = [m for w, m in zip(worlds, metrics, strict=True)
              if m is not None and w.half == half and w.design == "aa"]
        ivs = [(lo, hi) for m in aa if (iv := stratified(m, "cpa"))
               and (lo := iv.get("low")) is not None and (hi := iv.get("high")) is not None]
        covered = sum(lo <= 0.0 <= hi for lo, hi in ivs)
        out[half] = {"covered": covered, "worlds": len(ivs), "undefined": len(aa) - len(ivs),
                     "rate": covered / len(ivs) if ivs else None}
    return out


def _cross(rows: list[tuple[BenchWorld, dict[str, str]]], hazard: str, key: str) -> dict[str, Any]:
    """How often verdict ``key`` fires in the worlds with ``hazard``; for a verdict with a hazard
    of its own (other than ``hazard``), only over the worlds without it."""
    own = VERDICT_HAZARD.get(key)
    pick = [r for w, r in rows if hazard in w.hazards
            and (own is None or own == hazard or own not in w.hazards)]
    return _rate(sum(r[key] == CAUSE for r in pick), len(pick))


def kind_of(w: BenchWorld) -> str:
    return "aa" if w.design == "aa" else ("ab_hazards" if w.hazards or w.dormant else "ab_clean")


def _by_magnitude(present: list[tuple[float, bool]]) -> list[dict[str, Any]]:
    """Detection per distinct magnitude (binary hazards: one row)."""
    out = []
    for mag in sorted({m for m, _ in present}) if len({m for m, _ in present}) <= 5 else []:
        hits = [f for m, f in present if m == mag]
        out.append({"magnitude": mag, **_rate(sum(hits), len(hits))})
    if len({m for m, _ in present}) > 5:  # continuous: terciles of the drawn magnitudes
        mags = np.array([m for m, _ in present])
        edges = np.quantile(mags, [0, 1 / 3, 2 / 3, 1])
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            last = i == len(edges) - 2  # bins are [lo, hi), the last one [lo, hi]
            hits = [f for m, f in present if lo <= m and (m < hi or (last and m == hi))]
            out.append({"magnitude": [float(lo), float(hi)], **_rate(sum(hits), len(hits))})
    return out


def _magnitude(m: float | list[float]) -> str:
    """A magnitude or a bin of them, to three significant digits."""
    return f"{m[0]:.3g}-{m[1]:.3g}" if isinstance(m, list) else f"{m:.3g}"


def _pct(r: dict[str, Any]) -> str:
    return "n/a (0 worlds)" if r["rate"] is None else f"{r['rate']:.0%} ({r['named']}/{r['worlds']})"


def render(scores: dict[str, Any], command: str) -> str:
    """``diagnosis_bench.md``."""
    lines = ["# Diagnosis benchmark", "",
             f"`{command}`: {scores['worlds']} worlds, {scores['failed']} failed. Rates are on the "
             "held-out half; the calibration half's are in `diagnosis_bench.json`.", ""]
    held = scores["halves"]["held_out"]
    lines += ["## Verdicts with a known cause", "",
              "| verdict | detection | false alarm, A/A | false alarm, clean A/B | "
              "false alarm, A/B with other hazards | detection by magnitude |",
              "|---|---|---|---|---|---|"]
    for key, r in held["rates"].items():
        mags = "; ".join(f"{_magnitude(m['magnitude'])}: {_pct(m)}" for m in r["by_magnitude"])
        fa = r["false_alarm"]
        lines.append(f"| {key} | {_pct(r['detection'])} | {_pct(fa['aa'])} | {_pct(fa['ab_clean'])} "
                     f"| {_pct(fa['ab_hazards'])} | {mags} |")
    if cov := scores.get("aa_cpa_coverage"):
        c = cov["held_out"]
        lines += ["", f"In the A/A worlds, the CPA lift's 95% interval covers 0 in "
                  f"{_pct({'named': c['covered'], 'worlds': c['worlds'], 'rate': c['rate']})}."]
    lines += ["", "## How often each verdict fires, by kind of world", "",
              "| verdict | A/A | clean A/B | A/B with hazards |", "|---|---|---|---|"]
    for key, f in held["fires"].items():
        lines.append(f"| {key} | {_pct(f['aa'])} | {_pct(f['ab_clean'])} | {_pct(f['ab_hazards'])} |")
    keys = list(held["fires"])
    lines += ["", "## Confusion: which verdict fires where each hazard was injected", "",
              "Off the diagonal, a verdict with a hazard of its own counts only the worlds without "
              "that hazard.", "",
              "| injected | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for h, row in held["confusion"].items():
        lines.append(f"| {h} | " + " | ".join(
            "n/a" if row[k]["rate"] is None else f"{row[k]['rate']:.0%}" for k in keys) + " |")
    if "calibration" in scores:
        lines += ["", "## Thresholds chosen on the calibration half", "",
                  f"The rule: the value with the highest detection whose false-alarm rate (worlds "
                  f"without the hazard) is at most {MAX_FALSE_ALARM:.0%}; ties to fewer false "
                  "alarms, then to the value nearest the shipped one. Calibration-half rates per "
                  "value, then the held-out half's at the chosen one.", "",
                  "| verdict | constant | shipped | chosen | calibration half: value → detection, "
                  "false alarm | held out at chosen: detection, false alarm |",
                  "|---|---|---|---|---|---|"]
        for key, c in scores["calibration"].items():
            tried = "; ".join(f"{r['value']:g} → {_pct(r['detection'])}, {_pct(r['false_alarm'])}"
                              for r in c["table"])
            held_at = scores["at_chosen"].get(key)
            at = ("n/a" if held_at is None else
                  f"{_pct(held_at['detection'])}, {_pct(held_at['false_alarm_all'])}")
            lines.append(f"| {key} | `{c['constant']}` | {c['current']:g} | {c['chosen']:g} | "
                         f"{tried} | {at} |")
    return "\n".join(lines) + "\n"
