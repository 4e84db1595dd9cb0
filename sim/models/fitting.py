"""Training a model version from logged rows: the start-up version and warm-started releases.

* :func:`fit_l2` fits the L2 ranker on the impressions (pCTR on every impression, pCVR on the
  clicked ones, with conversion labels as known at ``known_at``: late conversions are missing).
* :func:`fit_l1` distills an L1 two-tower model from the L2 teacher's pCVR on every logged row
  (impressions and sampled candidates), plus the conversion labels of clicked impressions.
* :func:`warm_start` copies the previous version and re-initialises a share of its layers.

A release continues from the previous version with ``releases.learning_rate`` for
``releases.epochs`` and keeps its input standardisation, so consecutive versions stay related but
drift apart: how far, and how much that matters when a query vector of one version meets an item
vector of another, is what the skew sweep measures.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from sim.config.schema import Config, TrainingConfig
from sim.models.checkpoints import Checkpoints
from sim.models.inputs import query_inputs, surface_onehot
from sim.models.ranker import Ranker
from sim.models.towers import TwoTowerBase
from sim.models.training import FitReport, distill_two_tower, train_ranker
from sim.models.training_log import WINNER, LoggedRows
from sim.numerics import unique_rows
from sim.world.users import Users

M = TypeVar("M", bound=nn.Module)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def l2_inputs(l2: Ranker, rows: LoggedRows, users: Users, n_surfaces: int) -> torch.Tensor:
    return l2.inputs(_t(users.features[rows.user]), _t(surface_onehot(rows.surface, n_surfaces)),
                     _t(rows.ad_features))


def teacher_pcvr(l2: Ranker, rows: LoggedRows, users: Users, n_surfaces: int) -> np.ndarray:
    """The L2 teacher's pCVR for every row, (n,) float64."""
    with torch.inference_mode():
        return torch.sigmoid(l2(l2_inputs(l2, rows, users, n_surfaces))[:, 1]).double().numpy()


def l1_pcvr(l1: TwoTowerBase, rows: LoggedRows, users: Users, n_surfaces: int) -> np.ndarray:
    """The L1 model's pCVR for every row with both towers of this one version, (n,) float64."""
    q, i = tower_vectors(l1, rows, users, n_surfaces)
    with torch.inference_mode():
        return torch.sigmoid((q * i).sum(1)).double().numpy()


def tower_vectors(l1: TwoTowerBase, rows: LoggedRows, users: Users,
                  n_surfaces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query and item vectors of every row, (n, D+1) each. Each tower runs once per distinct
    input (a (user, surface) pair, an ad's logged features) and the rows gather the results: a
    fraction of the work (thousands of distinct inputs behind a hundred thousand rows). The values
    are bit for bit those of a forward over every row (tested for both families): a tower maps
    each row on its own."""
    key = rows.user.astype(np.int64) * n_surfaces + rows.surface
    pairs, q_of = np.unique(key, return_inverse=True)
    ads, i_of = unique_rows(rows.ad_features)
    with torch.inference_mode():
        qx = _t(query_inputs(users, pairs // n_surfaces, (pairs % n_surfaces).astype(np.int8),
                             n_surfaces))
        q = l1.query_vectors(qx)[torch.from_numpy(q_of.ravel())]
        i = l1.item_vectors(_t(ads))[torch.from_numpy(i_of)]
    return q, i


def fit_l2(model: Ranker, rows: LoggedRows, known_at: float, users: Users, cfg: Config,
           mcfg: TrainingConfig, gen: torch.Generator, fit_norm: bool,
           checkpoints: Checkpoints | None = None, ctr_offset: float = 0.0) -> FitReport:
    """Fit ``model`` in place on the impressions of ``rows`` (a known fit is loaded from
    ``checkpoints``: same model, same generator state after); ``ctr_offset``: see
    :func:`sim.models.training.train_ranker`."""
    imp = rows.take(np.flatnonzero(rows.source == WINNER))
    ns = len(cfg.world.surfaces)

    def train() -> FitReport:
        x = l2_inputs(model, imp, users, ns)
        conv = imp.click & imp.converted_by(known_at)
        pos = torch.from_numpy(np.maximum(imp.position, 0).astype(np.int64))
        cvr_rows = None
        if mcfg.cvr_negative_rate < 1.0:  # negatives downsampled, never reweighted
            keep = torch.rand(len(imp), generator=gen).numpy() < mcfg.cvr_negative_rate
            cvr_rows = torch.from_numpy(imp.click & (conv | keep))
        report = train_ranker(model, x, pos, _t(imp.click), _t(conv), mcfg, gen, fit_norm,
                              cvr_rows, ctr_offset)
        model.eval()
        return report

    if checkpoints is None:
        return train()
    inputs = {"rows": _training_fields(imp), "known_at": known_at, "users": users.features,
              "surfaces": ns, "training": dataclasses.asdict(mcfg), "fit_norm": fit_norm}
    if ctr_offset:
        inputs["ctr_offset"] = ctr_offset
    return checkpoints.fit("l2", model, gen, inputs, train)


def fit_l1(model: TwoTowerBase, l2: Ranker, rows: LoggedRows, known_at: float, users: Users,
           cfg: Config, mcfg: TrainingConfig, gen: torch.Generator, fit_norm: bool,
           checkpoints: Checkpoints | None = None, unclicked_weight: float = 1.0) -> FitReport:
    """Distill ``model`` in place from the teacher ``l2`` on ``rows`` (a known fit is loaded
    from ``checkpoints``); ``unclicked_weight``: each unclicked row's weight in the teacher's
    term against a clicked row's (the weights scaled to mean 1), for rows whose unclicked ones
    were downsampled."""
    ns = len(cfg.world.surfaces)

    def train() -> FitReport:
        teacher = torch.from_numpy(teacher_pcvr(l2, rows, users, ns).astype(np.float32))
        label = rows.click & rows.converted_by(known_at)
        qx = _t(query_inputs(users, rows.user, rows.surface, ns))
        weight = None
        if unclicked_weight != 1.0:
            w = np.where(rows.click, 1.0, unclicked_weight)
            weight = torch.from_numpy((w / w.mean()).astype(np.float32))
        report = distill_two_tower(model, qx, _t(rows.ad_features), teacher, _t(label),
                                   torch.from_numpy(rows.click), mcfg, gen, fit_norm, weight)
        model.eval()
        return report

    if checkpoints is None:
        return train()
    inputs = {"rows": _training_fields(rows), "teacher": dict(l2.state_dict()), "known_at": known_at,
              "users": users.features, "surfaces": ns, "training": dataclasses.asdict(mcfg),
              "fit_norm": fit_norm, "family": model.family}
    if unclicked_weight != 1.0:
        inputs["unclicked_weight"] = unclicked_weight
    return checkpoints.fit("l1", model, gen, inputs, train)


def _training_fields(rows: LoggedRows) -> list[np.ndarray]:
    """The fields of the logged rows a fit reads."""
    return [rows.user, rows.surface, rows.ad_features, rows.source, rows.position, rows.click,
            rows.conversion_time]


@contextmanager
def torch_draws(seed: int) -> Iterator[None]:
    """A block whose draws from torch's default generator start at ``seed`` (a named stream's,
    :meth:`sim.rng.Streams.torch_seed`). Parameter initialisation draws from that generator and
    takes no other (``nn.Linear.reset_parameters``: a new model's layers, a release's
    re-initialised ones). After the block torch's CPU generator is what it was before (the
    simulator runs on the CPU; no other device's generator is saved): no draw outside the block
    moves one inside it, nor the other way round."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclasses.dataclass(frozen=True)
class RngState:
    """Where a fit's random draws start: its generator's state and torch's default generator's
    (parameter initialisation). The readiness lineages trained beside an arm's own L1 each start
    where the arm's own L1 ended, so a family's draws do not depend on which other families are
    checked with it (and the families compared share them: common random numbers)."""

    gen: torch.Tensor
    default: torch.Tensor

    @staticmethod
    def take(gen: torch.Generator) -> RngState:
        return RngState(gen.get_state(), torch.get_rng_state())

    def restore(self, gen: torch.Generator) -> None:
        gen.set_state(self.gen)
        torch.set_rng_state(self.default)


def warm_start(model: M, reinit_share: float, gen: torch.Generator) -> M:
    """A trainable copy of ``model`` with each Linear layer re-initialised with prob. ``reinit_share``.

    Re-initialisation draws from torch's default generator: call it inside :func:`torch_draws`."""
    new = copy.deepcopy(model)
    if reinit_share > 0:
        for module in new.modules():
            if isinstance(module, nn.Linear) and torch.rand((), generator=gen) < reinit_share:
                module.reset_parameters()
    new.train()
    return new


def release_config(cfg: Config) -> TrainingConfig:
    """The training knobs of a release: the start-up ones with the release's learning rate and
    epochs."""
    r = cfg.releases
    return dataclasses.replace(cfg.training, learning_rate=r.learning_rate, epochs=r.epochs)
