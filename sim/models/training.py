"""Training loops: the L2 ranker on impressions, the L1 two-tower by distillation from L2.

Both are plain minibatch Adam over tensors built from logs. Shuffling uses a torch Generator seeded
from the run's named stream, so training is reproducible for a fixed ``threads.torch``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sim.config.schema import TrainingConfig
from sim.models.ranker import Ranker
from sim.models.towers import TwoTowerBase
from sim.threads import few_rows_on_one_thread


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """Final-epoch mean training losses."""

    loss: float
    steps: int


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float], rows: int) -> None:
    """One optimiser step on a batch of ``rows`` (the backward of a small one on one thread, as
    its forward: see :mod:`sim.threads`)."""
    opt.zero_grad()
    with few_rows_on_one_thread(rows):
        loss.backward()
    opt.step()
    losses.append(float(loss.detach()))


def _report(losses: list[float], n_per_epoch: int) -> FitReport:
    last = losses[-n_per_epoch:]
    return FitReport(loss=sum(last) / max(len(last), 1), steps=len(losses))


def _batches(n: int, cfg: TrainingConfig, gen: torch.Generator,
             opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    """The minibatches of every epoch, each a fresh permutation; sets ``opt``'s learning rate
    for each step by ``cfg.lr_schedule``."""
    total = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    step = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for idx in perm.split(cfg.batch_size):
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, total)
            step += 1
            yield idx


def learning_rate(cfg: TrainingConfig, step: int, total: int) -> float:
    """The rate of step ``step`` (0-based) of ``total``: ``cfg.learning_rate`` throughout, or a
    half cosine from it at the first step down to near 0 at the last."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total))


def train_ranker(
    model: Ranker, x: torch.Tensor, position: torch.Tensor, click: torch.Tensor,
    conversion: torch.Tensor, cfg: TrainingConfig, gen: torch.Generator, fit_norm: bool = True,
    cvr_rows: torch.Tensor | None = None,
) -> FitReport:
    """Fit pCTR on every impression and pCVR on clicked impressions (BCE on both heads), or on
    the rows of ``cvr_rows`` (bool, a subset of the clicked ones) when given.

    ``fit_norm=False`` keeps the input standardisation of a warm-started model."""
    if fit_norm:
        model.norm.fit(x)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    clicked = click > 0.5 if cvr_rows is None else cvr_rows
    losses: list[float] = []
    n_per_epoch = (x.shape[0] + cfg.batch_size - 1) // cfg.batch_size
    for idx in _batches(x.shape[0], cfg, gen, opt):
        out = model(x[idx], position[idx])
        loss = F.binary_cross_entropy_with_logits(out[:, 0], click[idx])
        m = clicked[idx]
        if m.any():
            loss = loss + F.binary_cross_entropy_with_logits(out[m, 1], conversion[idx][m])
        _step(opt, loss, losses, len(idx))
    return _report(losses, n_per_epoch)


def distill_two_tower(
    model: TwoTowerBase, query_x: torch.Tensor, item_x: torch.Tensor, teacher: torch.Tensor,
    label: torch.Tensor, has_label: torch.Tensor, cfg: TrainingConfig, gen: torch.Generator,
    fit_norm: bool = True,
) -> FitReport:
    """Fit the L1 logit to the L2 teacher's pCVR on every pair, plus conversion labels where known.

    ``query_x`` (N, Fq), ``item_x`` (N, Fi) are aligned pairs; ``teacher`` (N,) probabilities;
    ``label`` (N,) 0/1 conversions, used where ``has_label`` (clicked impressions).
    """
    if fit_norm:
        model.query_norm.fit(query_x)
        model.item_norm.fit(item_x)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    losses: list[float] = []
    n_per_epoch = (query_x.shape[0] + cfg.batch_size - 1) // cfg.batch_size
    for idx in _batches(query_x.shape[0], cfg, gen, opt):
        logit = model(query_x[idx], item_x[idx])
        loss = F.binary_cross_entropy_with_logits(logit, teacher[idx])
        m = has_label[idx]
        if cfg.label_weight > 0 and m.any():
            loss = loss + cfg.label_weight * F.binary_cross_entropy_with_logits(
                logit[m], label[idx][m])
        _step(opt, loss, losses, len(idx))
    return _report(losses, n_per_epoch)
