"""Training loops: the L2 ranker on impressions, the L1 two-tower by distillation from L2.

Both are plain minibatch Adam over tensors built from logs. Shuffling uses a torch Generator seeded
from the run's named stream, so training is reproducible for a fixed ``threads.torch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sim.config.schema import TrainingConfig
from sim.models.ranker import Ranker
from sim.models.towers import TwoTowerBase
from sim.threads import few_rows_on_one_thread


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """The last epoch's mean training loss, the optimiser steps taken and the epochs run (fewer
    than configured when ``training.early_stopping`` stopped the fit)."""

    loss: float
    steps: int
    epochs: int = 0  # 0 in a report kept by the checkpoint cache before this field existed


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float], rows: int) -> None:
    """One optimiser step on a batch of ``rows`` (the backward of a small one on one thread, as
    its forward: see :mod:`sim.threads`)."""
    opt.zero_grad()
    with few_rows_on_one_thread(rows):
        loss.backward()
    opt.step()
    losses.append(float(loss.detach()))


def _report(losses: list[float], n_per_epoch: int, epochs: int) -> FitReport:
    last = losses[-n_per_epoch:]
    return FitReport(loss=sum(last) / max(len(last), 1), steps=len(losses), epochs=epochs)


class EarlyStop:
    """``training.early_stopping``: the rows a fit trains on and the ones it holds out (a share
    ``holdout_share`` drawn from the fit's generator), and after each epoch the holdout loss,
    the best weights so far and whether to stop (no relative improvement of ``min_improvement``
    for more than ``patience`` epochs). Off: every row trains, every epoch runs, nothing is
    drawn, so the fit is what it was before the rule existed."""

    def __init__(self, model: torch.nn.Module, n: int, cfg: TrainingConfig,
                 gen: torch.Generator, holdout_loss: Callable[[torch.Tensor], float]) -> None:
        self.model, self.cfg, self.holdout_loss = model, cfg, holdout_loss
        self.epochs = 0
        self.best, self.bad = math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.train_rows: torch.Tensor = torch.arange(n)
        self.holdout: torch.Tensor | None = None
        if cfg.early_stopping:
            held = torch.rand(n, generator=gen) < cfg.holdout_share
            self.train_rows, self.holdout = torch.nonzero(~held)[:, 0], torch.nonzero(held)[:, 0]

    def after_epoch(self) -> bool:
        """Count the epoch; with the rule on, score the holdout and say whether to stop."""
        self.epochs += 1
        if self.holdout is None or self.holdout.numel() == 0:
            return False
        with torch.no_grad():
            loss = self.holdout_loss(self.holdout)
        if loss < self.best * (1.0 - self.cfg.min_improvement):
            self.best, self.bad = loss, 0
            self.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad > self.cfg.patience

    def finish(self) -> None:
        """Keep the best epoch's weights (the rule on)."""
        if self.holdout is not None and self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def _fit(model: torch.nn.Module, cfg: TrainingConfig, gen: torch.Generator, stop: EarlyStop,
         batch_loss: Callable[[torch.Tensor], torch.Tensor]) -> FitReport:
    """Adam over the minibatches of :func:`_batches`, each step on ``batch_loss`` of its rows;
    then the best epoch's weights if ``stop`` kept them."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    losses: list[float] = []
    n_per_epoch = (stop.train_rows.numel() + cfg.batch_size - 1) // cfg.batch_size
    for idx in _batches(cfg, gen, opt, stop):
        _step(opt, batch_loss(idx), losses, len(idx))
    stop.finish()
    return _report(losses, n_per_epoch, stop.epochs)


def _batches(cfg: TrainingConfig, gen: torch.Generator, opt: torch.optim.Optimizer,
             stop: EarlyStop) -> Iterator[torch.Tensor]:
    """The minibatches of every epoch over the rows ``stop`` trains on, each epoch a fresh
    permutation; sets ``opt``'s learning rate for each step by ``cfg.lr_schedule``; after each
    epoch asks ``stop`` whether to go on."""
    rows = stop.train_rows
    n = rows.numel()
    total = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    step = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        if stop.holdout is not None:
            perm = rows[perm]
        for idx in perm.split(cfg.batch_size):
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, total)
            step += 1
            yield idx
        if stop.after_epoch():
            return


def learning_rate(cfg: TrainingConfig, step: int, total: int) -> float:
    """The rate of step ``step`` (0-based) of ``total``: ``cfg.learning_rate`` throughout, or a
    half cosine from it at the first step down to near 0 at the last."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total))


def train_ranker(
    model: Ranker, x: torch.Tensor, position: torch.Tensor, click: torch.Tensor,
    conversion: torch.Tensor, cfg: TrainingConfig, gen: torch.Generator, fit_norm: bool = True,
    cvr_rows: torch.Tensor | None = None, ctr_offset: float = 0.0,
) -> FitReport:
    """Fit pCTR on every impression and pCVR on clicked impressions (BCE on both heads), or on
    the rows of ``cvr_rows`` (bool, a subset of the clicked ones) when given.

    ``ctr_offset`` is added to the click logit in the loss only: for rows whose unclicked
    impressions were kept at rate w, an offset of -log w makes the model's own logit the
    population's (the kept rows' click odds are the population's / w), so its pCTR stays
    calibrated (He et al. 2014, "Practical Lessons from Predicting Clicks on Ads at Facebook",
    section 6: negative downsampling, then a recalibration; here the correction is in training).

    ``fit_norm=False`` keeps the input standardisation of a warm-started model."""
    clicked = click > 0.5 if cvr_rows is None else cvr_rows

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        out = model(x[idx], position[idx])
        ctr_logit = out[:, 0] + ctr_offset if ctr_offset else out[:, 0]
        loss = F.binary_cross_entropy_with_logits(ctr_logit, click[idx])
        m = clicked[idx]
        if m.any():
            loss = loss + F.binary_cross_entropy_with_logits(out[m, 1], conversion[idx][m])
        return loss

    stop = EarlyStop(model, x.shape[0], cfg, gen, lambda idx: float(batch_loss(idx)))
    if fit_norm:
        model.norm.fit(x[stop.train_rows] if stop.holdout is not None else x)
    return _fit(model, cfg, gen, stop, batch_loss)


def distill_two_tower(
    model: TwoTowerBase, query_x: torch.Tensor, item_x: torch.Tensor, teacher: torch.Tensor,
    label: torch.Tensor, has_label: torch.Tensor, cfg: TrainingConfig, gen: torch.Generator,
    fit_norm: bool = True, weight: torch.Tensor | None = None,
) -> FitReport:
    """Fit the L1 logit to the L2 teacher's pCVR on every pair, plus conversion labels where known.

    ``query_x`` (N, Fq), ``item_x`` (N, Fi) are aligned pairs; ``teacher`` (N,) probabilities;
    ``label`` (N,) 0/1 conversions, used where ``has_label`` (clicked impressions); ``weight``
    (N,), when given, weighs each pair's teacher term (the label term is a mean over the labelled
    pairs).
    """
    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        logit = model(query_x[idx], item_x[idx])
        loss = F.binary_cross_entropy_with_logits(
            logit, teacher[idx], weight=None if weight is None else weight[idx])
        m = has_label[idx]
        if cfg.label_weight > 0 and m.any():
            loss = loss + cfg.label_weight * F.binary_cross_entropy_with_logits(
                logit[m], label[idx][m])
        return loss

    stop = EarlyStop(model, query_x.shape[0], cfg, gen, lambda idx: float(batch_loss(idx)))
    if fit_norm:
        rows = stop.train_rows if stop.holdout is not None else slice(None)
        model.query_norm.fit(query_x[rows])
        model.item_norm.fit(item_x[rows])
    return _fit(model, cfg, gen, stop, batch_loss)
