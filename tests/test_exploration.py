"""The exploration log drawn long and downsampled: every click kept, the unclicked impressions
and unshown pairs at the negative rate, and a ranker trained on it with the offset click logit
calibrated on the whole population (and miscalibrated by about 1 / rate without the offset)."""

from __future__ import annotations

import math

import numpy as np
import torch

from sim.models.bootstrap import exploration_rows
from sim.models.fitting import fit_l2
from sim.models.ranker import Ranker
from sim.models.training_log import FULL, WINNER
from sim.rng import Streams
from sim.world.marketplace import build_marketplace

from conftest import tiny_config


def _logs(rate: float, n: int = 20_000):  # type: ignore[no-untyped-def]
    # ten epochs: the click head starts at logit 0, and a few dozen steps of a tiny downsampled
    # log leave it far from any rate, offset or not
    cfg = tiny_config(f"training.exploration_requests={n}", "training.epochs=10",
                      f"training.exploration_negative_rate={rate}")
    market = build_marketplace(cfg, Streams(cfg.seed))
    return cfg, market, exploration_rows(market, cfg, Streams(cfg.seed))


def test_a_downsampled_log_keeps_every_click_and_a_share_of_the_rest() -> None:
    _, _, whole = _logs(1.0)
    _, _, part = _logs(0.2)
    # one chunk (n below the chunk size): the same requests and ads, a subset of the rows
    assert part.click.sum() == whole.click.sum() > 100
    assert np.isfinite(part.conversion_time).sum() == np.isfinite(whole.conversion_time).sum()
    for source in (WINNER, FULL):
        n_all = int(((whole.source == source) & ~whole.click).sum())
        n_kept = int(((part.source == source) & ~part.click).sum())
        assert abs(n_kept - 0.2 * n_all) < 5 * math.sqrt(0.2 * 0.8 * n_all)
    assert np.array_equal(part.true_pcvr[part.click], whole.true_pcvr[whole.click])


def test_a_long_log_is_drawn_in_chunks_each_of_new_requests(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sim.models.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "EXPLORATION_CHUNK", 1000)
    keep_all = 1 - 1e-12  # the chunked route, with (almost surely) nothing dropped
    _, _, first = _logs(keep_all, n=1000)
    _, _, log = _logs(keep_all, n=3000)
    per = len(first)
    assert per == 1000 * 7 and len(log) == 3 * per  # 3 slots and 4 distillation pairs a request
    # the first chunk is the shorter log; the later ones are other requests, not its repeats
    assert np.array_equal(log.user[:per], first.user) and np.array_equal(log.ad_id[:per], first.ad_id)
    for c in (1, 2):
        assert not np.array_equal(log.user[c * per:(c + 1) * per], first.user)
        assert not np.array_equal(log.click[c * per:(c + 1) * per], first.click)


def _trained_l2(cfg, market, rows, offset: float) -> Ranker:  # type: ignore[no-untyped-def]
    users, cat = market.users, market.catalog
    l2 = Ranker(users.features.shape[1], len(cfg.world.surfaces), cat.features.shape[1],
                cfg.world.latent_dim, cfg.models.l2_hidden, cfg.auction.n_slots)
    torch.manual_seed(0)
    fit_l2(l2, rows, 0.0, users, cfg, cfg.training, torch.Generator().manual_seed(1),
           fit_norm=True, ctr_offset=offset)
    return l2


def test_the_offset_keeps_pctr_calibrated_on_the_population() -> None:
    from sim.models.fitting import l2_inputs

    cfg, market, whole = _logs(1.0)
    _, _, part = _logs(0.1)
    shown = whole.take(np.flatnonzero(whole.source == WINNER))
    realised = float(shown.click.mean())

    def calibration(offset: float) -> float:
        l2 = _trained_l2(cfg, market, part, offset)
        x = l2_inputs(l2, shown, market.users, len(cfg.world.surfaces))
        pos = torch.from_numpy(shown.position.astype(np.int64))
        with torch.inference_mode():
            p = torch.sigmoid(l2(x, pos)[:, 0]).numpy()
        return float(p.mean()) / realised

    assert 0.8 < calibration(-math.log(0.1)) < 1.25  # 1.10 at the tiny world (1.02 unsampled)
    assert calibration(0.0) > 3.0  # the downsampled odds, read as the population's
