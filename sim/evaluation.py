"""Offline evaluation in the clean world, and the version-skew sensitivity sweep.

*Clean world*: one checkpoint for both towers, every logged feature, the training logs' rows.
For each log source (``auction_winner``, ``full_request``, ``partial_request``) and decile of the
L2 teacher's pCVR, on up to ``evaluation.rows`` rows per source of the last window that
no evaluated model trained on (:func:`evaluation_rows`):

* ``log_mae``: mean |ln p - ln teacher| against the L2 teacher's pCVR;
* ``log_loss``, ``normalized_entropy``, ``calibration``: against the *true* pCVR as a soft label
  (the expected log loss; calibration = sum p / sum true pCVR). The simulator knows the truth, so
  these are defined on unshown candidates too and carry no label noise;
* ``label_log_loss``, ``label_calibration``: against drawn conversions on clicked impressions
  (``auction_winner`` only), what a real team could compute.

*Skew sweep* (the retrospective's version-skew sensitivity check): for each family, fix the query tower at
the latest version V and pair it with the item tower of version V - k, k = 0..``readiness.max_distance``;
loss and calibration per log source and per index tier. ``excess_loss`` is the log loss minus
the entropy of the truth (the mean KL divergence from the true pCVR): the part of the loss a model
can change, so relative changes are not diluted by irreducible noise. The readiness gate fails a
family whose overall excess loss at ``readiness.gate_distance`` rises by more than
``readiness.gate_max_increase`` (relative to distance 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sim.config.schema import Config
from sim.features.coverage import coverage_shares
from sim.logs.writer import LogWriter
from sim.models.fitting import l1_pcvr, teacher_pcvr, tower_vectors
from sim.models.label_join import pipeline_rows
from sim.models.registry import Registry
from sim.models.towers import TwoTowerBase
from sim.models.training_log import SOURCES, WINNER, LoggedRows, TrainingLog
from sim.parity_audit import family_importance, parity_audit
from sim.results import (
    EvalWindow,
    OfflineResults,
    PairChange,
    PairScore,
    SkewCurve,
    SkewGate,
    SkewPoint,
    SkewSweep,
)
from sim.scoring import (
    binary_entropy,
    calibration_ratio,
    cross_entropy,
    log_loss,
    log_mae,
    row_log_error,
    win_concentration,
)
from sim.serving.arm import Arm
from sim.serving.index import TIERS
from sim.world.users import Users

CHANGES = ("log_loss", "excess_loss", "calibration", "log_mae")  # the fields of PairChange


def evaluation_rows(log: TrainingLog, registry: Registry, lineages: list[str], horizon: float,
                    cfg: Config, rng: np.random.Generator,
                    users: Users | None = None) -> tuple[LoggedRows | None, EvalWindow]:
    """The rows offline evaluation and the skew sweep read, and the window they come from.

    The window is ``[start, end)``: the last ``releases.train_window_s`` before the horizon,
    starting no earlier than the end of the training window of any model it evaluates
    (``lineages``: each arm's latest L1 and its L2 teacher), so offline evaluation never reads rows
    an evaluated model trained on; of its rows, :func:`eval_rows` (drawn from ``rng``). None when
    the window holds no rows (``start >= end``: every row is in some model's training window).
    With ``evaluation.bot_filter_rate`` r > 0, the rows of users whose observed request rate is
    more than r times the median user's are dropped first (:func:`bot_filtered`); every offline
    reading (the models' scores, the skew sweep, the parity audit, the readiness replay) is then
    of the filtered rows."""
    end = horizon + 1.0
    trained = max(registry.latest(lin).window_end for lin in lineages)
    start = max(end - cfg.releases.train_window_s, trained)
    rows = log.window(end, length=end - start, uniform=True) if start < end else None
    dropped = (0, 0)
    if rows is not None and cfg.evaluation.bot_filter_rate > 0:
        if users is None:
            raise ValueError("evaluation.bot_filter_rate needs the users")
        rows, dropped = bot_filtered(rows, users, cfg.evaluation.bot_filter_rate)
        if rows is None:
            raise ValueError(f"evaluation.bot_filter_rate={cfg.evaluation.bot_filter_rate} "
                             f"dropped every one of the window's {dropped[0]} rows: nothing is "
                             "left to evaluate")
    window = EvalWindow(start=start, end=end, rows=0 if rows is None else len(rows),
                        filtered_rows=dropped[0], filtered_users=dropped[1])
    return (None if rows is None else eval_rows(rows, cfg, rng)), window


def bot_filtered(rows: LoggedRows, users: Users,
                 rate: float) -> tuple[LoggedRows | None, tuple[int, int]]:
    """``rows`` without those of users whose observable request rate (``Users.request_rate``:
    the log of it over the median user's, with the features' noise) is more than ``rate``
    times the median (None if none is left), and (rows dropped, users dropped). It reads the
    feature a team has, never the world's bot flag."""
    observed = users.request_rate
    if observed is None:
        raise ValueError("a bot filter needs the users' request-rate feature (a world with bots)")
    out = observed[rows.user] > math.log(rate)
    kept = rows.take(np.flatnonzero(~out))
    return (kept if len(kept) else None), (int(out.sum()), int(np.unique(rows.user[out]).size))


def eval_rows(rows: LoggedRows, cfg: Config, rng: np.random.Generator) -> LoggedRows:
    """Up to ``evaluation.rows`` rows per log source, drawn without replacement."""
    keep = []
    for code in range(len(SOURCES)):
        idx = np.flatnonzero(rows.source == code)
        if idx.size > cfg.evaluation.rows:
            idx = np.sort(rng.choice(idx, cfg.evaluation.rows, replace=False))
        keep.append(idx)
    return rows.take(np.concatenate(keep))


def score(p: np.ndarray, rows: LoggedRows, teacher: np.ndarray) -> dict[str, Any]:
    """The offline metrics of predictions ``p`` on ``rows`` (see the module docstring)."""
    truth = rows.true_pcvr
    ce = cross_entropy(truth, p)
    out: dict[str, Any] = {"rows": len(rows), "log_mae": log_mae(p, teacher), "log_loss": ce,
                           "normalized_entropy": ce / max(binary_entropy(float(truth.mean())), 1e-12),
                           "calibration": float(p.sum() / truth.sum()),
                           "label_log_loss": None, "label_calibration": None}
    clicked = rows.click & (rows.source == WINNER)
    y = np.isfinite(rows.conversion_time[clicked])
    if y.any():
        out["label_log_loss"] = log_loss(y.astype(float), p[clicked])
        out["label_calibration"] = calibration_ratio(y.astype(float), p[clicked])
    return out


def offline_eval(registry: Registry, models: dict[str, tuple[str, str]], control_l2: str,
                 rows: LoggedRows, users: Users, cfg: Config, writer: LogWriter,
                 served: dict[str, int] | None = None,
                 views: dict[str, LoggedRows] | None = None) -> dict[str, Any]:
    """``offline.<model>.<source>.{overall, deciles}`` for each named model (name -> (L1
    lineage, its L2 teacher's lineage)): the lineage's newest version, the one a team evaluates.

    Each model is scored against its own teacher (the L2 it distils from and is compared with
    online; under ``diverted`` training the arms' teachers differ), deciles by that teacher's
    pCVR. Where the teacher is not ``control_l2``, ``overall`` also gives
    ``log_mae_control_teacher``, the log MAE against the control's L2. ``served``: the version
    each model's query tower served at the end of the run; where it is not the newest (a
    model-versioning bug, or a release within the query rollout delay of the end), ``served``
    gives that checkpoint's ``overall`` scores per source on the same rows against the same
    teacher. ``views``: the rows as a model's own training pipeline reads them, where they are
    not ``rows`` (a pipeline that joins a counter family at label time,
    :mod:`sim.models.label_join`): the model is scored on its view, as its team would, and
    ``point_in_time`` gives its ``overall`` scores per source on ``rows``, the values as of each
    request, model and teacher alike."""
    ns = len(cfg.world.surfaces)
    views = views or {}
    teachers = {lin: teacher_pcvr(registry.latest(lin).ranker, rows, users, ns)
                for lin in dict.fromkeys([control_l2, *(t for _, t in models.values())])}
    out: dict[str, Any] = {}
    for name, (lineage, teacher_lineage) in models.items():
        if views.get(name, rows) is not rows:
            out[name] = offline_eval(registry, {name: (lineage, teacher_lineage)}, control_l2,
                                     views[name], users, cfg, writer, served)[name]
            mv = registry.latest(lineage)
            out[name]["point_in_time"] = _served_scores(mv.tower, mv.version, rows, users, ns,
                                                        teachers[teacher_lineage])
            continue
        teacher = teachers[teacher_lineage]
        edges = np.quantile(teacher, np.linspace(0, 1, 11)[1:-1])
        decile = np.searchsorted(edges, teacher, side="right")
        mv = registry.latest(lineage)
        p = l1_pcvr(mv.tower, rows, users, ns)
        per_source: dict[str, Any] = {}
        for code, source in enumerate(SOURCES):
            m = rows.source == code
            if not m.any():
                continue
            entry: dict[str, Any] = {"overall": score(p[m], rows.take(np.flatnonzero(m)), teacher[m]),
                     "deciles": []}
            if teacher_lineage != control_l2:
                entry["overall"]["log_mae_control_teacher"] = log_mae(p[m], teachers[control_l2][m])
            _log_offline(writer, name, mv.lineage, mv.version, teacher_lineage, source, -1,
                         entry["overall"])
            for d in range(10):
                md = m & (decile == d)
                if md.sum() > 0:
                    s = score(p[md], rows.take(np.flatnonzero(md)), teacher[md])
                    entry["deciles"].append({"decile": d, **s})
                    _log_offline(writer, name, mv.lineage, mv.version, teacher_lineage, source,
                                 d, s)
            per_source[source] = entry
        out[name] = {"lineage": lineage, "version": mv.version, "family": mv.family,
                     "teacher": teacher_lineage, "sources": per_source}
        version = (served or {}).get(name, mv.version)
        if version != mv.version:
            out[name]["served"] = _served_scores(registry.get(lineage, version).tower, version,
                                                 rows, users, ns, teacher)
    return out


def _served_scores(tower: TwoTowerBase, version: int, rows: LoggedRows, users: Users, ns: int,
                   teacher: np.ndarray) -> dict[str, Any]:
    """A served checkpoint's ``overall`` scores per log source (see :func:`offline_eval`)."""
    p = l1_pcvr(tower, rows, users, ns)
    sources = {source: {"overall": score(p[m], rows.take(np.flatnonzero(m)), teacher[m])}
               for code, source in enumerate(SOURCES) if (m := rows.source == code).any()}
    return {"version": version, "sources": sources}


def _log_offline(writer: LogWriter, name: str, lineage: str, version: int, teacher: str,
                 source: str, decile: int, s: dict[str, Any]) -> None:
    writer.append("offline_eval", {"model": name, "lineage": lineage, "version": version,
                                   "teacher": teacher, "source": source, "decile": decile,
                                   **{k: (np.nan if v is None else v) for k, v in s.items()
                                      if k != "log_mae_control_teacher"}})


def _pair_metrics(p: np.ndarray, rows: LoggedRows, teacher: np.ndarray, m: np.ndarray
                  ) -> PairScore:
    ce = cross_entropy(rows.true_pcvr[m], p[m])
    return PairScore(rows=int(m.sum()), log_loss=ce,
                     excess_loss=ce - cross_entropy(rows.true_pcvr[m], rows.true_pcvr[m]),
                     calibration=float(p[m].sum() / rows.true_pcvr[m].sum()),
                     log_mae=log_mae(p[m], teacher[m]))


def skew_sweep(registry: Registry, families: dict[str, str], l2_lineage: str, rows: LoggedRows,
               users: Users, cfg: Config, writer: LogWriter) -> SkewSweep:
    """Each family's curve by version distance and slice, and its readiness gate (family ->
    lineage; ``metrics.json``: ``offline.skew_sweep.<family>.<distance>``,
    ``offline.skew_gate.<family>``).

    For distance k, every query version a with an item version a - k is an *anchor*: the metrics
    of (query a, item a - k) are averaged over anchors, and ``delta`` is the mean change against
    the clean pairing (query a, item a) of the same anchor, which cancels how good or stale each
    version is on this window and leaves the effect of the skew. ``latest_query`` is the retrospective's
    single-anchor curve (query fixed at the latest version).

    The mechanism beside the metrics, averaged over anchors: ``logit_shift``, the mean |change of
    the L1 logit| from the clean pairing to the skewed one (what skew does to a score);
    ``item_shift``, how far the item vectors moved (mean |i(a - k) - i(a)| over mean |i(a)|);
    ``query_norm``, the mean |q(a)| that turns an item's move into a logit change."""
    ns = len(cfg.world.surfaces)
    teacher = teacher_pcvr(registry.latest(l2_lineage).ranker, rows, users, ns)
    groups = {"all": np.ones(len(rows), bool)}
    groups |= {f"source:{s}": rows.source == c for c, s in enumerate(SOURCES)}
    groups |= {f"tier:{t}": rows.tier == c for c, t in enumerate(TIERS)}
    groups = {k: m for k, m in groups.items() if m.any()}
    curves: dict[str, SkewCurve] = {}
    gates: dict[str, SkewGate] = {}
    for family, lineage in families.items():
        versions = registry.versions(lineage)
        vectors = [tower_vectors(mv.tower, rows, users, ns) for mv in versions]
        qv, iv = [q for q, _ in vectors], [i for _, i in vectors]
        n = len(versions)
        curve: SkewCurve = {}
        for k in range(min(cfg.readiness.max_distance, n - 1) + 1):
            curve[k] = {}
            for name, m in groups.items():
                point = curve[k][name] = _at_distance(qv, iv, k, rows, teacher, m)
                kind, _, value = name.partition(":")
                writer.append("skew_sweep", {
                    "family": family, "lineage": lineage, "query_version": n, "distance": k,
                    "source": value if kind == "source" else "all",
                    "tier": value if kind == "tier" else "all", "anchors": point.anchors,
                    **{key: getattr(point, key) for key in (
                        "rows", "log_loss", "excess_loss", "calibration", "log_mae",
                        "logit_shift", "item_shift", "query_norm")},
                    "delta_excess_loss": point.delta.excess_loss,
                    "delta_log_mae": point.delta.log_mae})
        curves[family] = curve
        gates[family] = _gate(curve, cfg)
    return SkewSweep(curves=curves, gates=gates)


def _at_distance(qv: list[torch.Tensor], iv: list[torch.Tensor], k: int, rows: LoggedRows,
                 teacher: np.ndarray, m: np.ndarray) -> SkewPoint:
    """The metrics of every (query a, item a - k) pairing of a lineage's versions on the rows
    ``m``, averaged over anchors, with ``delta`` against the clean pairing of the same anchor and
    ``latest_query`` the pairing with the latest query version."""
    pairs: list[PairScore] = []
    deltas: list[PairChange] = []
    drift: list[tuple[float, float, float]] = []
    mt = torch.from_numpy(m)
    for a in range(k, len(qv)):  # anchor query version a + 1, item version a + 1 - k
        skewed, clean_logit = (qv[a] * iv[a - k]).sum(1), (qv[a] * iv[a]).sum(1)
        p = torch.sigmoid(skewed).double().numpy()
        clean = torch.sigmoid(clean_logit).double().numpy()
        pm, cm = _pair_metrics(p, rows, teacher, m), _pair_metrics(clean, rows, teacher, m)
        pairs.append(pm)
        deltas.append(PairChange(**{key: getattr(pm, key) - getattr(cm, key) for key in CHANGES}))
        moved = (iv[a - k] - iv[a])[mt]
        drift.append((float((skewed - clean_logit)[mt].abs().mean()),
                      float(moved.norm(dim=1).mean() / iv[a][mt].norm(dim=1).mean()),
                      float(qv[a][mt].norm(dim=1).mean())))
    def mean(values: list[float]) -> float:  # noqa: E306
        return float(np.mean(values))
    return SkewPoint(
        rows=mean([x.rows for x in pairs]),
        **{key: mean([getattr(x, key) for x in pairs]) for key in CHANGES},
        logit_shift=mean([d[0] for d in drift]), item_shift=mean([d[1] for d in drift]),
        query_norm=mean([d[2] for d in drift]), anchors=len(pairs),
        delta=PairChange(**{key: mean([getattr(x, key) for x in deltas]) for key in CHANGES}),
        latest_query=pairs[-1])


def _gate(curve: SkewCurve, cfg: Config) -> SkewGate:
    d, threshold = cfg.readiness.gate_distance, cfg.readiness.gate_max_increase
    if d not in curve:
        return SkewGate(distance=d, threshold=threshold, increase=None,
                        result="not_enough_versions")
    base = curve[0]["all"].excess_loss  # the clean pairings, averaged over anchors
    inc = curve[d]["all"].delta.excess_loss / base
    return SkewGate(distance=d, threshold=threshold, increase=inc,
                    result="pass" if inc <= threshold else "fail")


WIN_TRIM = 0.01  # the share of largest-loss rows the win is read without


def concentration(registry: Registry, models: dict[str, tuple[str, str]],
                  views: dict[str, LoggedRows], users: Users, cfg: Config) -> dict[str, Any]:
    """Per log source, how much of the treatment's offline log_mae win over the control the
    largest-loss rows, and the largest-loss users' rows, carry
    (:func:`sim.scoring.win_concentration` with ``WIN_TRIM``): each arm's newest L1 against its
    own teacher on its own view of the rows, as :func:`offline_eval` scores them. With bots in
    the world, the bots' rows are the ground truth beside it (``flag_*``, ``win_unflagged``: the
    win on the humans' rows)."""
    ns = len(cfg.world.surfaces)
    errors = {}
    for name in ("control", "treatment"):
        lineage, teacher_lineage = models[name]
        rows = views[name]
        errors[name] = row_log_error(l1_pcvr(registry.latest(lineage).tower, rows, users, ns),
                                     teacher_pcvr(registry.latest(teacher_lineage).ranker, rows,
                                                  users, ns))
    source = views["control"].source
    bot = None if users.bot is None else users.bot[views["control"].user]
    user = views["control"].user
    return {s: win_concentration(errors["control"][m], errors["treatment"][m], WIN_TRIM,
                                 None if bot is None else bot[m], user[m])
            for code, s in enumerate(SOURCES) if (m := source == code).sum() >= 1 / WIN_TRIM}


def after_run(registry: Registry, arms: Sequence[Arm], log: TrainingLog, sweep: dict[str, str],
              horizon: float, cfg: Config, users: Users, rng: np.random.Generator,
              writer: LogWriter) -> OfflineResults:
    """What a run measures offline once it ends: on the rows of :func:`evaluation_rows` (its
    ``window`` says which and how many), each arm's models (:func:`offline_eval`), the skew sweep
    of ``sweep``'s lineages (family -> lineage), and each arm's family importance against its own
    teacher with the parity audit (:mod:`sim.parity_audit`)."""
    lineages = [lin for arm in arms for lin in (arm.l1_lineage, arm.l2_lineage)]
    rows, window = evaluation_rows(log, registry, lineages, horizon, cfg, rng, users)
    if rows is None:
        return OfflineResults(window=window)
    models = {arm.name: (arm.l1_lineage, arm.l2_lineage) for arm in arms}
    views = {arm.name: pipeline_rows(rows, math.inf, arm.cfg) for arm in arms}  # labels as final
    scored = offline_eval(registry, models, "control/l2", rows, users, cfg, writer,
                          served={arm.name: arm.query_version for arm in arms}, views=views)
    if set(models) == {"control", "treatment"}:
        scored["treatment"]["concentration"] = concentration(registry, models, views, users, cfg)
    skew = skew_sweep(registry, sweep, "control/l2", rows, users, cfg, writer)
    importance: dict[str, Any] = {}
    ns = len(cfg.world.surfaces)
    for arm in arms:  # importance against the arm's own teacher, as it is scored
        teacher = teacher_pcvr(registry.latest(arm.l2_lineage).ranker, rows, users, ns)
        imp = family_importance(registry.latest(arm.l1_lineage).tower, teacher, rows, users, ns,
                                cfg.world.latent_dim)
        importance[arm.name] = imp
        parity_audit(arm.name, coverage_shares(arm.coverage.total), imp, writer)
    return OfflineResults(window=window, models=scored, skew=skew, importance=importance)
