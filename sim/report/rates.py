"""Each verdict's measured operating characteristic, printed beside it in every report.

``verdict_rates.json`` (beside this module) is written by the diagnosis benchmark
(``python -m sim.diagnosis_bench ... --rates-out sim/report/verdict_rates.json``): on the
held-out half of its library, for a verdict with a hazard of its own, how often it was named
where the hazard was present (detection) and where it was absent (false alarms); for every
verdict, how often it fired in A/A worlds, clean A/B worlds and A/B worlds with hazards. The
file names the library and the command, so a reader can re-measure it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

RATES_FILE = Path(__file__).with_name("verdict_rates.json")


@functools.cache
def load_rates(path: Path = RATES_FILE) -> dict[str, Any]:
    """The benchmark's rates ({} when the file is absent)."""
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _frac(r: dict[str, Any] | None) -> str | None:
    if not r or not r.get("worlds"):
        return None
    return f"{r['named']} of {r['worlds']}"


def rate_line(key: str, rates: dict[str, Any] | None = None) -> str | None:
    """One sentence of ``key``'s measured rates, or None when the benchmark has none."""
    rates = load_rates() if rates is None else rates
    v = (rates.get("verdicts") or {}).get(key)
    if not v:
        return None
    parts = []
    if (det := _frac(v.get("detection"))) is not None:
        parts.append(f"named in {det} worlds with its hazard")
    if (fa := _frac(v.get("false_alarm"))) is not None:
        parts.append(f"in {fa} without it")
    fires = v.get("fires") or {}
    kinds = [f"{_frac(fires.get(k))} {label}" for k, label in
             (("aa", "A/A"), ("ab_clean", "clean A/B"), ("ab_hazards", "A/B with hazards"))
             if _frac(fires.get(k)) is not None]
    if kinds:
        parts.append("fired in " + ", ".join(kinds))
    return f"on the diagnosis benchmark ({rates.get('library', 'library')}): " + "; ".join(parts)


def held_out_rates(scores: dict[str, Any], library: str, command: str) -> dict[str, Any]:
    """The held-out half's rates of a benchmark's scores, in this module's file format."""
    held = scores["halves"]["held_out"]
    out: dict[str, Any] = {}
    for key, fires in held["fires"].items():
        entry: dict[str, Any] = {"fires": {k: {"named": r["named"], "worlds": r["worlds"]}
                                           for k, r in fires.items()}}
        if key in held["rates"]:
            r = held["rates"][key]
            entry["detection"] = {k: r["detection"][k] for k in ("named", "worlds")}
            entry["false_alarm"] = {k: r["false_alarm_all"][k] for k in ("named", "worlds")}
        out[key] = entry
    return {"library": library, "command": command, "verdicts": out}
