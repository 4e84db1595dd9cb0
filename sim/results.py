"""Typed results of what a run measures after its funnel, and the one place they become JSON.

(Intervals and lifts (:class:`Interval`, :class:`Concentration`) come from :mod:`sim.stats`;
the skew sweep and the offline evaluation from :mod:`sim.evaluation`.)

The offline side of a run is computed as these dataclasses (:mod:`sim.evaluation` makes them,
:mod:`sim.readiness` and the run read them); :func:`to_json` turns any of them into the plain
dicts, lists and numbers that ``metrics.json`` and ``readiness.json`` hold, with the same keys
(a distance becomes the string key ``"2"``). Nothing else in ``sim`` builds those dicts for the
offline side: after the JSON edge, readers (the report) read the files.

The skew sweep of one family (``metrics.json``: ``offline.skew_sweep.<family>.<distance>.<slice>``)
is a :class:`SkewPoint` per version distance and per slice of the evaluation rows (``all``,
``source:<source>``, ``tier:<tier>``); the readiness gate of a family is a :class:`SkewGate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Interval:
    """An estimate with its 95% interval (``sim.stats``); ``low`` and ``high`` are None for a
    point estimate (e.g. revenue per request, billed per advertiser-day). A lift also gives
    ``mde``, the smallest relative increase its design detects with 80% power (5% two-sided)."""

    estimate: float | None
    low: float | None
    high: float | None
    mde: float | None = None


@dataclass(frozen=True, kw_only=True)
class Concentration:
    """How much of a lift's advertiser variance a few advertisers carry (``sim.stats``): the
    advertisers with a non-zero share, the ids of the largest three, largest first, and the
    shares of the largest one and three."""

    advertisers: int
    top: list[int]
    top1_share: float
    top3_share: float


@dataclass(frozen=True, kw_only=True)
class PairScore:
    """One pairing of a query and an item tower on a slice of the evaluation rows: log loss
    against the true pCVR, its excess over the truth's entropy, calibration (sum p / sum true
    pCVR) and log MAE against the L2 teacher."""

    rows: int
    log_loss: float
    excess_loss: float
    calibration: float
    log_mae: float


@dataclass(frozen=True, kw_only=True)
class PairChange:
    """A skewed pairing minus the clean pairing of the same anchor (query version)."""

    log_loss: float
    excess_loss: float
    calibration: float
    log_mae: float


@dataclass(frozen=True, kw_only=True)
class SkewPoint:
    """A family at one version distance on one slice: the :class:`PairScore` fields averaged
    over the anchors (``rows`` too, hence a float), the mechanism (``logit_shift``: mean |change
    of the L1 logit| from the clean pairing; ``item_shift``: how far the item vectors moved,
    relative to their length; ``query_norm``: the mean query-vector length), the number of
    anchors, the mean change against the clean pairing (``delta``) and the single-anchor pairing
    with the latest query version (``latest_query``)."""

    rows: float
    log_loss: float
    excess_loss: float
    calibration: float
    log_mae: float
    logit_shift: float
    item_shift: float
    query_norm: float
    anchors: int
    delta: PairChange
    latest_query: PairScore


SkewCurve = dict[int, dict[str, SkewPoint]]  # version distance -> slice -> point


@dataclass(frozen=True, kw_only=True)
class SkewGate:
    """The readiness gate of a family: the relative rise of the excess loss at ``distance``
    against the clean pairing (``increase``; None with too few versions) and ``result``:
    ``pass``, ``fail`` or ``not_enough_versions``."""

    distance: int
    threshold: float
    increase: float | None
    result: str


@dataclass(frozen=True, kw_only=True)
class SkewSweep:
    """Each checked family's curve and gate (family -> ...)."""

    curves: dict[str, SkewCurve]
    gates: dict[str, SkewGate]


@dataclass(frozen=True, kw_only=True)
class EvalWindow:
    """The rows offline evaluation read: ``[start, end)`` in simulated seconds, and how many the
    window held before the per-source sample (after the bot filter, if any: it dropped
    ``filtered_rows`` rows of ``filtered_users`` users)."""

    start: float
    end: float
    rows: int
    filtered_rows: int = 0
    filtered_users: int = 0


@dataclass(frozen=True, kw_only=True)
class OfflineResults:
    """A run's offline evaluation (:func:`sim.evaluation.after_run`): the window, and on its rows
    each arm's models scored per log source and decile, the skew sweep, each arm's feature-family
    importance. Only ``window`` when the window holds no rows."""

    window: EvalWindow
    models: dict[str, Any] | None = None
    skew: SkewSweep | None = None
    importance: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        """``metrics.json``'s ``offline``: ``window``, ``models``, ``skew_sweep``, ``skew_gate``,
        ``importance``."""
        out: dict[str, Any] = {"window": to_json(self.window)}
        if self.skew is None:
            return out
        return out | {"models": to_json(self.models), "skew_sweep": to_json(self.skew.curves),
                      "skew_gate": to_json(self.skew.gates), "importance": to_json(self.importance)}


@dataclass(frozen=True, kw_only=True)
class ArmMetrics:
    """One arm's online metrics (``metrics.json``: ``arms.<arm>``; computed from the logs after
    the run by :func:`sim.summary.arm_metrics` and its neighbours; ``docs/outputs.md`` gives
    each key's meaning). The funnel recalls are None when the summary was given no funnel sizes
    (a run always gives them) or the arm logged no full request."""

    # money (sim.billing): what the arm's advertisers were charged, its conversions and CPAs
    spend: float
    conversions: int
    cpa: float | None  # oCPM spend over oCPM attributed conversions
    cpa_all: float | None
    ocpm_spend: float
    ocpm_conversions: int
    delivered_spend: float
    revenue: float
    ocpm_cpa_to_target: float | None
    ocpm_cpa_to_target_quantiles: dict[str, Any]
    # delivery
    clicks: int
    impressions: int
    ocpm_impression_share: float | None
    # the models online: L1 against L2 and the truth on clicked impressions, L2 on its own
    l1_calibration: float | None
    l1_logloss: float | None
    l1_log_mae: float | None
    l2_calibration: float | None
    l2_logloss: float | None
    daily: list[dict[str, Any]]
    # serving: latency and SLA success per stage, versions served, feature coverage, parity
    latency_ms: dict[str, Any]
    success_rate: dict[str, Any]
    version_distance: dict[str, Any]
    feature_coverage: dict[str, Any]
    parity_audit: list[dict[str, Any]]
    # the funnel's recalls (sim.recall)
    retrieval_recall: float | None = None
    ranking_recall: float | None = None
    oracle_retrieval_recall: float | None = None
    oracle_ranking_recall: float | None = None
    headroom_retrieval_recall: float | None = None
    headroom_ranking_recall: float | None = None
    recall_by_surface: dict[str, Any] | None = None
    # the serving path against the exact fp32 path (sim.serving.probe)
    ann_recall: float | None = None
    l1_score_error: float | None = None
    serving_path: dict[str, Any] = field(default_factory=dict)
    # the L1 checkpoints served against those the release log names (sim.summary.served_versions)
    served_versions: dict[str, Any] = field(default_factory=dict)
    # each ratio metric's 95% interval (sim.stats)
    ci: dict[str, Interval | None] = field(default_factory=dict)


def to_json(value: Any) -> Any:
    """``value`` as JSON-ready data: a dataclass as a dict of its fields in order, a dict with
    its keys as strings, a tuple as a list, a numpy scalar as its Python number."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
