"""The coverage dashboard and the parity audit.

*Coverage* per feature family and artifact: the share of served rows in which the family was
present, counted in the data plane per hour and written to the ``feature_coverage`` log:

* ``l1_embedding``: live retrieved candidates whose index vector was embedded with the family;
* ``l2_feature_store``: candidates L2 scored while the family was onboarded to the store;
* ``training_logs``: rows logged for training with the family (the offline insertion table).

*Parity audit*: the families present offline (in the training logs the models learn from and
are evaluated on) but missing, in part or whole, from an online artifact; beside each, the family's
*importance* to the arm's live L1: how much its offline loss rises when the family is zero-filled
in the offline evaluation rows (the serving default, as the L1 embedding path would fill it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sim.config.schema import ARTIFACTS, FEATURE_FAMILIES
from sim.features.registry import fill_default, has_family
from sim.logs.writer import LogWriter
from sim.metrics import cross_entropy, log_mae
from sim.models.releases import l1_pcvr
from sim.models.training_log import LoggedRows
from sim.world.catalog import family_slices
from sim.world.users import Users

PRESENT = 0.99  # a family is "present" in an artifact at this coverage or more


def _add(arm: Any, hour: int, artifact: str, family: str, rows: int, present: int) -> None:
    for table, key in ((arm.coverage, (hour, artifact, family)),
                       (arm.coverage_total, (artifact, family))):
        acc = table.setdefault(key, [0, 0])
        acc[0] += rows
        acc[1] += present


def count_coverage(arm: Any, hour: int, served: Any, logged_families: np.ndarray) -> None:
    """Accumulate one served batch's coverage counts in ``arm.coverage`` (a loop over the five
    families, not over rows)."""
    live_fam = served.item_families[served.live]
    scored = int((served.ok1 & served.latency.ok["l2"][:, None]).sum())
    l2 = arm.features.families("l2_feature_store")
    for family in FEATURE_FAMILIES:
        _add(arm, hour, "l1_embedding", family, live_fam.size,
             int(has_family(live_fam, family).sum()))
        _add(arm, hour, "l2_feature_store", family, scored, scored if family in l2 else 0)
        _add(arm, hour, "training_logs", family, logged_families.size,
             int(has_family(logged_families, family).sum()))


def flush_coverage(arm: Any, writer: LogWriter) -> None:
    if not arm.coverage:
        return
    keys = sorted(arm.coverage)
    writer.append("feature_coverage", {
        "hour": [k[0] for k in keys], "arm": arm.name, "artifact": [k[1] for k in keys],
        "family": [k[2] for k in keys], "rows": [arm.coverage[k][0] for k in keys],
        "present": [arm.coverage[k][1] for k in keys]})
    arm.coverage.clear()


def coverage_shares(totals: dict[tuple[str, str], list[int]]) -> dict[str, dict[str, float | None]]:
    """``{family: {artifact: share}}`` from run totals (None where no rows were served)."""
    return {f: {a: (totals[(a, f)][1] / totals[(a, f)][0]
                    if (a, f) in totals and totals[(a, f)][0] else None) for a in ARTIFACTS}
            for f in FEATURE_FAMILIES}


def family_importance(model: Any, teacher: np.ndarray, rows: LoggedRows, users: Users,
                      n_surfaces: int, latent_dim: int) -> dict[str, dict[str, float]]:
    """Per family: the rise in the model's offline loss (cross-entropy against the true pCVR)
    and ``log_mae`` (against ``teacher``) when the family is zero-filled in ``rows``."""
    slices = family_slices(latent_dim)
    base = l1_pcvr(model, rows, users, n_surfaces)
    base_ce, base_mae = cross_entropy(rows.true_pcvr, base), log_mae(base, teacher)
    out = {}
    for family in FEATURE_FAMILIES:  # five families: five forwards over the eval rows
        kept = set(FEATURE_FAMILIES) - {family}
        filled = dataclasses.replace(rows, ad_features=fill_default(rows.ad_features, kept, slices))
        p = l1_pcvr(model, filled, users, n_surfaces)
        out[family] = {"log_loss_increase": cross_entropy(rows.true_pcvr, p) - base_ce,
                       "log_mae_increase": log_mae(p, teacher) - base_mae}
    return out


def parity_audit(arm: str, coverage: dict[str, dict[str, float | None]],
                 importance: dict[str, dict[str, float]], writer: LogWriter | None = None
                 ) -> list[dict[str, Any]]:
    """Families present in the training logs but below :data:`PRESENT` coverage in an online
    artifact, most important first; each row also goes to the ``parity_audit`` log."""
    rows = []
    for family, cov in coverage.items():
        offline = cov["training_logs"]
        if offline is None or offline < PRESENT:
            continue
        for artifact in ("l2_feature_store", "l1_embedding"):
            online = cov[artifact]
            if online is not None and online < PRESENT:
                rows.append({"arm": arm, "family": family, "artifact": artifact,
                             "offline_coverage": offline, "online_coverage": online,
                             **importance[family]})
    rows.sort(key=lambda r: -r["log_loss_increase"])
    if writer is not None and rows:
        writer.append("parity_audit", {k: [r[k] for r in rows] for k in rows[0]})
    return rows
