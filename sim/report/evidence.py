"""The numbers the report stands on, read from a run's ``metrics.json`` (pure functions).

Two arms: the *offline change* of a metric is treatment / control − 1 of the arms' latest L1 in
the offline evaluation (negative ``log_mae`` change = the treatment matches the L2 teacher
better offline: an offline win); the *online change* is the experiment's lift. One arm: the
offline and online values of the same arm side by side.

The *online/offline gap* is measured in one metric on both sides: L1's ``log_mae`` against L2's
pCVR, offline on the ``auction_winner`` log source (the impressions shown) and online on the
impressions shown (``arms.<arm>.l1_log_mae``). Two arms: gap = online lift − offline change of
that metric (percentage points; 0 = online confirmed offline). One arm: online − offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SOURCES = ("auction_winner", "full_request", "partial_request")
GAP_SOURCE = "auction_winner"  # the offline log source of the impressions shown online


def two_arms(metrics: dict[str, Any]) -> bool:
    return "control" in metrics["arms"] and "treatment" in metrics["arms"]


def offline_overall(metrics: dict[str, Any], arm: str, source: str) -> dict[str, Any] | None:
    model = metrics.get("offline", {}).get("models", {}).get(arm)
    if not model:
        return None
    return (model["sources"].get(source) or {}).get("overall")


def rel(new: float | None, old: float | None) -> float | None:
    """new / old − 1, or None where undefined."""
    if new is None or old is None or old == 0 or not math.isfinite(new) or not math.isfinite(old):
        return None
    return new / old - 1.0


def offline_change(metrics: dict[str, Any], metric: str = "log_mae") -> dict[str, float | None]:
    """Per log source: treatment / control − 1 of ``metric`` offline (two arms)."""
    out = {}
    for source in SOURCES:
        c = offline_overall(metrics, "control", source)
        t = offline_overall(metrics, "treatment", source)
        out[source] = rel((t or {}).get(metric), (c or {}).get(metric))
    return out


def offline_win(metrics: dict[str, Any]) -> float | None:
    """The offline win: −(log_mae change) on the gap source, positive when the treatment wins."""
    change = offline_change(metrics)[GAP_SOURCE] if two_arms(metrics) else None
    return None if change is None else -change


def lift(metrics: dict[str, Any], name: str) -> dict[str, float | None] | None:
    return (metrics.get("lift") or {}).get(name)


def stratified(metrics: dict[str, Any], name: str) -> dict[str, float | None] | None:
    """The lift stratified by ramp step (``lift_stratified``), or the pooled lift for a run
    without it (one arm, or a run from before it existed)."""
    if "lift_stratified" in metrics:
        return (metrics.get("lift_stratified") or {}).get(name)
    return lift(metrics, name)


def significant(interval: dict[str, float | None] | None) -> bool:
    """Whether a 95% interval excludes 0."""
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return False
    return bool(interval["low"] > 0 or interval["high"] < 0)  # type: ignore[operator]


@dataclass(frozen=True, kw_only=True)
class Gap:
    """The online/offline gap in L1's log_mae against L2 (see the module docstring)."""

    offline: float | None  # two arms: relative change; one arm: offline log_mae
    online: float | None  # two arms: online lift; one arm: online l1_log_mae
    gap: float | None
    relative: bool  # True for two arms (changes), False for one arm (levels)
    cpa_lift: dict[str, float | None] | None


def l1_log_mae_lift(metrics: dict[str, Any]) -> float | None:
    arms = metrics["arms"]
    return rel(arms["treatment"].get("l1_log_mae"), arms["control"].get("l1_log_mae"))


def gap(metrics: dict[str, Any]) -> Gap:
    if two_arms(metrics):
        off = offline_change(metrics)[GAP_SOURCE]
        on = l1_log_mae_lift(metrics)
        return Gap(offline=off, online=on, gap=None if off is None or on is None else on - off,
                   relative=True, cpa_lift=lift(metrics, "cpa"))
    arm = next(iter(metrics["arms"]))
    off_row = offline_overall(metrics, arm, GAP_SOURCE)
    off = (off_row or {}).get("log_mae")
    on = metrics["arms"][arm].get("l1_log_mae")
    return Gap(offline=off, online=on, gap=None if off is None or on is None else on - off, relative=False,
               cpa_lift=None)


def served_family(metrics: dict[str, Any], arm: str) -> str | None:
    model = metrics.get("offline", {}).get("models", {}).get(arm)
    return model.get("family") if model else None


def skew_cost(expectation: dict[str, float | None]) -> float:
    """The larger of a :func:`skew_expectation`'s predicted relative increases (0 if unknown)."""
    return max(expectation["log_mae"] or 0.0, expectation["excess_loss"] or 0.0)


def skew_expectation(metrics: dict[str, Any], arm: str) -> dict[str, float | None]:
    """What the offline skew sweep predicts for the version distances ``arm`` served.

    Each served distance k >= 1 is weighted by its share of live retrieved candidates and by the
    sweep's change at k (``delta``, averaged over anchors) of the arm's family; the sum is
    divided by the clean pairing's value. ``log_mae`` against the teacher and ``excess_loss``
    against the truth. Distances the sweep did not reach count at its largest one (a lower
    bound for a curve that rises); negative distances (query older than item, the hour
    between a release and its query rollout) are not in the sweep and are left out.
    """
    family = served_family(metrics, arm)
    sweep = (metrics.get("offline", {}).get("skew_sweep") or {}).get(family or "")
    shares = metrics["arms"][arm].get("version_distance", {}).get("all", {})
    skewed = sum(s for k, s in shares.items() if int(k) >= 1)
    out: dict[str, float | None] = {"skewed_share": skewed, "log_mae": None, "excess_loss": None}
    if not sweep or "0" not in sweep:
        return out
    reached = sorted(int(k) for k in sweep)
    for metric in ("log_mae", "excess_loss"):
        clean = sweep["0"]["all"][metric]
        if not clean:
            continue
        total = 0.0
        for k, share in shares.items():
            d = int(k)
            if d >= 1:
                at = str(min(d, reached[-1]))
                total += share * sweep[at]["all"]["delta"][metric]
        out[metric] = total / clean
    return out
