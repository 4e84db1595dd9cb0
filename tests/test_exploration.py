"""The exploration log drawn long and downsampled: every click kept, the unclicked impressions
and unshown pairs at the negative rate (a subset of the whole log's rows at the same seed), and
start-up models trained on it whose pCTR is calibrated on the whole population (and miscalibrated
by about 1 / rate without the click logit's offset)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sim.models.bootstrap as bootstrap
from sim.build import arm_configs
from sim.models.bootstrap import exploration_rows, train_initial_models
from sim.models.fitting import fit_l2, l2_inputs
from sim.models.ranker import Ranker
from sim.models.registry import Registry
from sim.models.training_log import FULL, WINNER, LoggedRows
from sim.rng import Streams
from sim.world.marketplace import Marketplace, build_marketplace

from conftest import tiny_config


def _logs(rate: float, n: int = 20_000):  # type: ignore[no-untyped-def]
    # ten epochs: the click head starts at logit 0, and a few dozen steps of a tiny downsampled
    # log leave it far from any rate, offset or not
    cfg = tiny_config(f"training.exploration_requests={n}", "training.epochs=10",
                      f"training.exploration_negative_rate={rate}")
    market = build_marketplace(cfg, Streams(cfg.seed))
    return cfg, market, exploration_rows(market, cfg, Streams(cfg.seed))


def _row_keys(rows: LoggedRows) -> np.ndarray:
    return np.stack([rows.user, rows.ad_id, rows.position, rows.source], axis=1)


def test_a_downsampled_log_is_the_whole_logs_clicks_and_a_share_of_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "EXPLORATION_CHUNK", 4000)  # three chunks, the last short
    _, _, whole = _logs(1.0, n=10_000)
    _, _, part = _logs(0.2, n=10_000)
    assert part.click.sum() == whole.click.sum() > 100
    assert np.array_equal(_row_keys(part)[part.click], _row_keys(whole)[whole.click])
    assert np.isfinite(part.conversion_time).sum() == np.isfinite(whole.conversion_time).sum()
    for source in (WINNER, FULL):
        n_all = int(((whole.source == source) & ~whole.click).sum())
        n_kept = int(((part.source == source) & ~part.click).sum())
        assert abs(n_kept - 0.2 * n_all) < 5 * math.sqrt(0.2 * 0.8 * n_all)
    # every kept row is a row of the whole log, in the same order
    keys = {tuple(r) for r in _row_keys(whole)}
    assert all(tuple(r) in keys for r in _row_keys(part)[::50])


def test_a_long_log_is_drawn_in_chunks_each_of_new_requests(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "EXPLORATION_CHUNK", 1000)
    _, _, first = _logs(1.0, n=1000)
    _, _, log = _logs(1.0, n=3000)
    per = len(first)
    assert per == 1000 * 7 and len(log) == 3 * per  # 3 slots and 4 distillation pairs a request
    # the first chunk is the shorter log; the later ones are other requests, not its repeats
    assert np.array_equal(_row_keys(log)[:per], _row_keys(first))
    for c in (1, 2):
        assert not np.array_equal(log.user[c * per:(c + 1) * per], first.user)
        assert not np.array_equal(log.click[c * per:(c + 1) * per], first.click)


def _calibration(l2: Ranker, market: Marketplace, shown: LoggedRows, n_surfaces: int) -> float:
    """Mean predicted pCTR over the whole log's impressions, against their realised CTR."""
    x = l2_inputs(l2, shown, market.users, n_surfaces)
    pos = torch.from_numpy(shown.position.astype(np.int64))
    with torch.inference_mode():
        p = torch.sigmoid(l2(x, pos)[:, 0]).numpy()
    return float(p.mean()) / float(shown.click.mean())


def test_start_up_pctr_is_calibrated_on_the_population_and_would_not_be_without_the_offset(
        ) -> None:
    cfg, market, whole = _logs(1.0)
    shown = whole.take(np.flatnonzero(whole.source == WINNER))
    ns = len(cfg.world.surfaces)
    part_cfg = tiny_config("training.exploration_requests=20000", "training.epochs=10",
                           "training.exploration_negative_rate=0.1")
    registry = Registry()
    control = arm_configs(part_cfg)["control"]
    train_initial_models(market, part_cfg, Streams(cfg.seed), registry,
                         [("control/l2", control, {"control/l1": control.models.l1_family})])
    assert 0.8 < _calibration(registry.latest("control/l2").ranker, market, shown, ns) < 1.25

    # the same rows read with no offset: the downsampled odds taken for the population's
    _, _, part = _logs(0.1)
    l2 = Ranker(market.users.features.shape[1], ns, market.catalog.features.shape[1],
                cfg.world.latent_dim, cfg.models.l2_hidden, cfg.auction.n_slots)
    fit_l2(l2, part, 0.0, market.users, cfg, part_cfg.training, torch.Generator().manual_seed(1),
           fit_norm=True)
    assert _calibration(l2, market, shown, ns) > 3.0
