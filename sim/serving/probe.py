"""The serving-path probe: the first requests of each tick's batch of an arm
(``serving.probe_requests_per_hour`` spread over the hour's ticks), served and also run down the
offline path.

The offline path is what offline evaluation assumes: the arm's fp32 query checkpoint, the fp32
item checkpoint's vectors of the very rows the deployed tiers hold, and an exact inner-product
search. The served path is what the funnel runs: the query tower in ``serving.query_dtype``, the
item vectors in ``serving.item_dtype``, stored and searched as ``index.factory`` says. Both see
the same deployed rows, versions and supersede masks, so the probe measures the serving path
alone; version skew, feature parity and timeouts act on both alike (the probe searches with no
timeout fallback).

Per probed request (columns of the ``serving_path`` log, summed over a tick's probed requests):

* ``exact`` / ``recalled``: the entries of the exact fp32 top-``k_retrieval`` and how many of them
  the served search returned (``ann_recall = recalled / exact``);
* ``candidates``, ``abs_error``, ``error``: the served candidates and the sum of |served L1 logit
  - fp32 logit| (and of the signed difference) over them; ``l1_score_error = abs_error /
  candidates``. The fp32 logit is the exact search's own score where it found the candidate
  (bit for bit what an exact fp32 index returns), else the fp32 inner product;
* ``pcvr_served``, ``pcvr_exact``, ``true_pcvr``: over the served candidates still live, L1's
  pCVR from the served logit and from the fp32 logit, and the true pCVR: the serving path's
  effect on L1 calibration is ``pcvr_served / true_pcvr`` against ``pcvr_exact / true_pcvr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sim.models.inputs import query_inputs
from sim.numerics import sigmoid
from sim.serving.arm import Arm
from sim.serving.funnel import Hits, retrieve
from sim.serving.index import TIERS
from sim.world.marketplace import Marketplace
from sim.world.response import true_rates
from sim.world.traffic import RequestBatch


@dataclass(frozen=True, kw_only=True)
class PathProbe:
    """Sums over the probed requests (see the module docstring)."""

    requests: int
    exact: int
    recalled: int
    candidates: int
    abs_error: float
    error: float
    pcvr_served: float
    pcvr_exact: float
    true_pcvr: float


def probe_size(per_hour: int, tick_s: float) -> int:
    """Requests probed per tick and arm for ``per_hour`` an hour (at least one)."""
    return max(1, math.ceil(per_hour * tick_s / 3600.0))


def _global_rows(arm: Arm, hits: Hits) -> np.ndarray:
    """(B, k) row of each hit in the arm's end-to-end row table, -1 where there is none."""
    return np.where(hits.row >= 0, hits.row + arm.row_offset[hits.tier], -1)


def _fp32_logits(arm: Arm, q: np.ndarray, hits: Hits) -> np.ndarray:
    """(B, k) float32 fp32 inner product of each hit's reference vector with ``q`` (B, D+1)."""
    out = np.zeros(hits.row.shape, np.float32)
    for code, name in enumerate(TIERS):  # at most two tiers
        mask = (hits.tier == code) & (hits.row >= 0)
        if name in arm.tiers and mask.any():
            b, j = np.nonzero(mask)
            ref = arm.tiers[name].reference[hits.row[b, j]]
            out[b, j] = (ref.astype(np.float64) * q[b].astype(np.float64)).sum(1)
    return out


def probe(arm: Arm, market: Marketplace, n_surfaces: int, k: int,
          batch: RequestBatch) -> PathProbe:
    """Serve ``batch``'s queries down both paths and compare (one search of each path)."""
    qx = torch.from_numpy(query_inputs(market.users, batch.user, batch.surface, n_surfaces))
    served_tower = arm.served_query()
    with torch.inference_mode():
        q_exact = arm.query_model.query_vectors(qx).numpy()
        # an fp32 arm serves the checkpoint itself: the same forward, computed once
        q_served = q_exact if served_tower.model is arm.query_model else \
            served_tower.query_vectors(qx).numpy()
    served = retrieve(arm, q_served, k)
    exact = retrieve(arm, q_exact, k, exact=True)
    gs, ge = _global_rows(arm, served), _global_rows(arm, exact)
    n_rows = arm.rows["ad_id"].shape[0]
    req = np.arange(len(batch))[:, None] * n_rows
    code_s = np.where(gs >= 0, req + gs, -1)
    code_e = np.where(ge >= 0, req + ge, -1)
    in_exact = np.isin(code_s, code_e[ge >= 0]) & (gs >= 0)
    # the fp32 logit of a served hit: the exact search's score where it found it, else computed
    order = np.argsort(code_e, axis=None)
    flat_e = code_e.ravel()[order]
    pos = np.clip(np.searchsorted(flat_e, code_s.ravel()), 0, flat_e.size - 1)
    from_exact = exact.logit.ravel()[order][pos].reshape(gs.shape)
    fp32 = np.where(in_exact, from_exact, _fp32_logits(arm, q_exact, served))
    valid = gs >= 0
    diff = np.where(valid, served.logit.astype(np.float64) - fp32, 0.0)
    g = np.where(valid, gs, n_rows - 1)  # the sentinel row for a missing hit
    slot, ad_id = arm.rows["slot"][g], arm.rows["ad_id"][g]
    live = valid & (market.catalog.ad_id[slot] == ad_id)
    cat = market.catalog
    _, true_pcvr = true_rates(market.truth, market.users.latent[batch.user], batch.surface,
                              cat.latent[slot], cat.creative[slot], cat.quality[slot],
                              market.users.logit_shifts(batch.user))
    return PathProbe(
        requests=len(batch), exact=int((ge >= 0).sum()), recalled=int(in_exact.sum()),
        candidates=int(valid.sum()), abs_error=float(np.abs(diff).sum()), error=float(diff.sum()),
        pcvr_served=float(sigmoid(served.logit.astype(np.float64))[live].sum()),
        pcvr_exact=float(sigmoid(fp32.astype(np.float64))[live].sum()),
        true_pcvr=float(true_pcvr[live].sum()))
