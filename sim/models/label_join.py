"""Label leakage: a counter family joined to the training rows at label time.

Serving logs a row's features as they were at the request. A training pipeline that (re)reads a
counter family when it joins the label (a late join, a backfill, a feature table keyed by day)
writes the counter as of the join instead: for a row that converted, the count now includes the
very conversion it is logged beside. The model learns that a converting row carries one more
conversion than its ad's other rows; online, at the request, that conversion has not happened
and the information is not there.

:func:`label_joined` is that pipeline: on the rows whose conversion is known by ``known_at``
(the release's, or the offline evaluation's, label time) and whose log holds the family, a
``share`` of them (drawn by a hash of the row, so every reader joins the same rows) get each
window of the offsite conversion counters one higher: ``log1p(expm1(v) + 1)`` on the logged
``log1p(count)``. Other rows, and every row of a pipeline with ``share`` 0, keep the values
they were logged with (the point-in-time values). Nothing else changes: the labels, the serving
path and the catalog the item tower embeds are untouched, so whatever the leak does online it
does through the models it trained.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim.config.schema import Config
from sim.features.registry import has_family
from sim.models.training_log import LoggedRows
from sim.rng import GOLDEN
from sim.world.catalog import family_slices

LEAKING_FAMILY = "offsite_conversions"  # the counter family a late join re-reads


def join_draw(rows: LoggedRows) -> np.ndarray:
    """A uniform in [0, 1) per row, a hash of the row's (ad, user, surface, time): the same row
    gets the same draw wherever it is read, with no random stream consumed."""
    with np.errstate(over="ignore"):
        h = rows.ad_id.astype(np.uint64) * GOLDEN
        h ^= rows.user.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019) + (h << np.uint64(6))
        h ^= rows.surface.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= rows.time.astype(np.float64).view(np.uint64) * np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xD6E8FEB86648EB2D)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def joined_rows(rows: LoggedRows, known_at: float, share: float) -> np.ndarray:
    """(n,) bool: the rows a pipeline with join share ``share`` re-reads at label time ``known_at``
    (converted by then, logged with the family, and drawn). ``known_at`` may be ``inf`` (every
    conversion that will ever arrive): a row that never converts is never joined."""
    if share <= 0.0:
        return np.zeros(len(rows), bool)
    converted = np.isfinite(rows.conversion_time) & rows.converted_by(known_at)
    return converted & has_family(rows.families, LEAKING_FAMILY) & (join_draw(rows) < share)


def label_joined(rows: LoggedRows, known_at: float, share: float, columns: slice) -> LoggedRows:
    """``rows`` as a pipeline that joins the counter columns ``columns`` at label time reads them
    (the module docstring); ``rows`` itself when nothing is joined."""
    hit = joined_rows(rows, known_at, share)
    if not hit.any():
        return rows
    features = rows.ad_features.copy()
    block = features[hit, columns].astype(np.float64)
    features[hit, columns] = np.log1p(np.expm1(block) + 1.0).astype(np.float32)
    return dataclasses.replace(rows, ad_features=features)


def pipeline_rows(rows: LoggedRows, known_at: float, cfg: Config) -> LoggedRows:
    """``rows`` as the training pipeline of an arm with config ``cfg`` reads them at ``known_at``."""
    columns = family_slices(cfg.world.latent_dim)[LEAKING_FAMILY]
    return label_joined(rows, known_at, cfg.features.label_join_share, columns)
