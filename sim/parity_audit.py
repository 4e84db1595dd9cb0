"""The parity audit: the feature families present offline (in the training logs the models learn
from and are evaluated on) but missing, in part or whole, from an online artifact; beside each, the
family's *importance* to the arm's live L1: how much its offline loss rises when the family is
zero-filled in the offline evaluation rows (the serving default, as the L1 embedding path would
fill it). Coverage comes from the data plane's dashboard (:mod:`sim.features.coverage`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sim.config.schema import FEATURE_FAMILIES
from sim.features.coverage import PRESENT
from sim.features.registry import fill_default
from sim.logs.writer import LogWriter
from sim.models.fitting import l1_pcvr
from sim.models.towers import TwoTowerBase
from sim.models.training_log import LoggedRows
from sim.scoring import cross_entropy, log_mae
from sim.world.catalog import family_slices
from sim.world.users import Users


def family_importance(model: TwoTowerBase, teacher: np.ndarray, rows: LoggedRows, users: Users,
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
    rows.sort(key=lambda r: -float(r["log_loss_increase"]))
    if writer is not None and rows:
        writer.append("parity_audit", {k: [r[k] for r in rows] for k in rows[0]})
    return rows
