"""Outlier domination: how much of an offline win the largest-loss rows carry
(:func:`sim.scoring.win_concentration`, ``offline.models.treatment.concentration``, the report's
``outlier_domination`` verdict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.schema import TrafficConfig, WorldConfig
from sim.report import verdicts as V
from sim.rng import Streams
from sim.scoring import log_mae, row_log_error, win_concentration
from sim.world.marketplace import build_marketplace
from sim.world.response import build_truth, true_rates
from sim.world.users import build_users

from conftest import read_log, run_tiny, tiny_config


def test_a_win_carried_by_one_row_is_gone_without_it() -> None:
    c = np.ones(1000)
    t = np.ones(1000)
    c[17] = 1000.0  # one row the control gets badly wrong, the treatment right
    t[17] = 0.0
    out = win_concentration(c, t, 0.01)
    assert out["win"] == pytest.approx(1000 / 1999)
    assert out["win_trimmed"] == pytest.approx(0.0)
    assert out["top_share"] == pytest.approx(1.0)


def test_a_uniform_win_survives_the_trim() -> None:
    c = np.random.default_rng(0).gamma(2.0, size=5000)
    out = win_concentration(c, 0.9 * c, 0.01)
    assert out["win"] == pytest.approx(0.1) and out["win_trimmed"] == pytest.approx(0.1)
    assert out["top_share"] < 0.1  # the rows that gain most are the largest-loss ones, 1% of rows


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), trim=st.floats(0.001, 0.2))
def test_the_read_out_is_scale_free_and_the_win_is_log_maes(seed: int, scale: float,
                                                            trim: float) -> None:
    rng = np.random.default_rng(seed)
    p, q, teacher = (rng.uniform(0.001, 0.5, 300) for _ in range(3))
    c, t = row_log_error(p, teacher), row_log_error(q, teacher)
    out = win_concentration(c, t, trim)
    assert out["win"] == pytest.approx(1 - log_mae(q, teacher) / log_mae(p, teacher))
    again = win_concentration(scale * c, scale * t, trim)
    for k in ("win", "win_trimmed", "top_share"):
        assert again[k] == pytest.approx(out[k], rel=1e-9, abs=1e-12)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="trim"):
        win_concentration(np.ones(3), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="equal"):
        win_concentration(np.ones(3), np.ones(4), 0.1)


def _metrics(win: float, kept: float) -> dict[str, Any]:
    conc = {"auction_winner": {"win": win, "win_trimmed": kept, "top_share": 0.5, "trim": 0.01,
                               "rows": 1000}}
    return {"arms": {"control": {}, "treatment": {}},
            "offline": {"models": {"control": {}, "treatment": {"concentration": conc}}}}


def _verdict(m: dict[str, Any]) -> V.Verdict:
    return V.outlier_domination(m)


def test_the_verdict_names_a_win_the_trim_halves() -> None:
    assert _verdict(_metrics(0.10, 0.049)).status == V.CAUSE
    assert _verdict(_metrics(0.10, 0.051)).status == V.RULED_OUT  # half survives
    assert _verdict(_metrics(0.04, 0.0)).status == V.RULED_OUT  # no offline win to carry
    assert _verdict({"arms": {"control": {}}}).status == V.NOT_MEASURABLE


def test_a_tiny_two_arm_world_reads_its_win_row_by_row(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, "experiment.arms=[control,treatment]", "models.l1_hidden=32",
                 "experiment.treatment.models.l1_hidden=64")
    models = m["offline"]["models"]
    conc = models["treatment"]["concentration"]
    assert "concentration" not in models["control"]
    for source, c in conc.items():
        ctrl = models["control"]["sources"][source]["overall"]["log_mae"]
        treat = models["treatment"]["sources"][source]["overall"]["log_mae"]
        assert c["win"] == pytest.approx(1 - treat / ctrl, rel=1e-6)  # the report's win, per row
        assert c["rows"] == models["control"]["sources"][source]["overall"]["rows"]
    assert _verdict(m).status in (V.CAUSE, V.RULED_OUT)


def test_bots_are_drawn_after_the_humans_and_read_as_their_request_rate() -> None:
    plain = build_users(WorldConfig(n_users=4000), TrafficConfig(), np.random.default_rng(3))
    bots = build_users(WorldConfig(n_users=4000, bot_share=0.1, bot_activity=20.0),
                       TrafficConfig(), np.random.default_rng(3))
    assert plain.bot is None and plain.logit_shifts(np.arange(3)) is None
    np.testing.assert_array_equal(bots.latent, plain.latent)  # the humans of the world without
    np.testing.assert_array_equal(bots.features[:, :-1], plain.features)
    assert bots.features.shape[1] == plain.features.shape[1] + 1
    assert bots.bot is not None and abs(bots.bot.mean() - 0.1) < 0.02
    share = np.diff(bots.activity_cdf, prepend=0.0)
    plain_share = np.diff(plain.activity_cdf, prepend=0.0)
    # a bot's activity is 20 times its drawn one: its share against a human's grows 20-fold
    ratio = (share / plain_share)[bots.bot].mean() / (share / plain_share)[~bots.bot].mean()
    assert ratio == pytest.approx(20.0, rel=1e-9)
    rate = bots.features[:, -1]
    assert rate[bots.bot].mean() - rate[~bots.bot].mean() == pytest.approx(np.log(20.0), abs=0.2)


def test_a_bots_true_rates_move_by_its_logit_shifts_exactly() -> None:
    rng = np.random.default_rng(0)
    truth = build_truth(WorldConfig(), rng)
    u, v = rng.normal(size=(5, 8)), rng.normal(size=(5, 3, 8))
    creative, quality = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    surface = np.zeros(5, np.int64)
    shift = (np.array([0, 2.0, 0, 2.0, 0]), np.array([0, -6.0, 0, -6.0, 0]))
    c0, v0 = true_rates(truth, u, surface, v, creative, quality)
    c1, v1 = true_rates(truth, u, surface, v, creative, quality, shift)

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(logit(c1) - logit(c0), np.repeat(shift[0][:, None], 3, 1), atol=1e-9)
    np.testing.assert_allclose(logit(v1) - logit(v0), np.repeat(shift[1][:, None], 3, 1), atol=1e-9)


def test_in_a_tiny_world_bots_click_and_do_not_convert(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, "world.bot_share=0.1", "world.bot_cvr_shift=-9", "world.bot_activity=20")
    imps = read_log(tmp_path, "impressions")
    cfg = tiny_config("world.bot_share=0.1", "world.bot_cvr_shift=-9", "world.bot_activity=20")
    users = build_marketplace(cfg, Streams(cfg.seed)).users
    assert users.bot is not None
    is_bot = users.bot[imps["user_id"].to_numpy()]
    assert 0.3 < is_bot.mean() < 0.9  # 10% of users at 20 times the activity
    ctr = imps["click"].to_numpy()
    assert ctr[is_bot].mean() > 2 * ctr[~is_bot].mean()
    assert imps["conversion"].to_numpy()[is_bot].sum() <= 2
    assert imps["true_pcvr"].to_numpy()[is_bot].max() < 1e-3
    conc = m["offline"]["models"].get("treatment", {}).get("concentration")
    assert conc is None  # one arm: no win to read


def test_a_query_tower_without_the_request_rate_is_blind_to_it() -> None:
    import torch

    from sim.models.families import make_l1, query_slices
    cfg = tiny_config("world.bot_share=0.01", "models.l1_user_features=[latent,segment]")
    full = tiny_config("world.bot_share=0.01")
    rate = query_slices(cfg)[2]
    assert rate.stop - rate.start == 1
    x = torch.randn(50, query_slices(cfg)[-1].stop)
    moved = x.clone()
    moved[:, rate] += 5.0
    for family in ("simple", "dhen"):
        blind, sees = make_l1(family, cfg), make_l1(family, full)
        assert "query_view" in dict(blind.named_buffers())
        assert "query_view" not in dict(sees.named_buffers())  # as a model built without the knob
        with torch.no_grad():
            assert torch.equal(blind.query_vectors(x), blind.query_vectors(moved))
            assert not torch.equal(sees.query_vectors(x), sees.query_vectors(moved))


def test_a_win_carried_by_one_heavy_user_is_gone_without_its_rows() -> None:
    """A bot holds 5% of the rows: trimming 1% of rows keeps most of its win, trimming 1% of the
    users (one of 100) removes all of it."""
    n = 10_000
    user = np.concatenate([np.zeros(500, np.int64), 1 + np.arange(n - 500) % 99])  # user 0: 5%
    c, t = np.ones(n), np.ones(n)
    c[user == 0] = 4.0
    t[user == 0] = 1.0
    out = win_concentration(c, t, 0.01, flag=user == 0, group=user)
    assert out["win"] == pytest.approx(1500 / 11_500)
    assert out["win_trimmed"] > 0.5 * out["win"]  # 100 of its 500 rows trimmed
    assert out["win_trimmed_groups"] == pytest.approx(0.0)
    assert out["top_groups_row_share"] == pytest.approx(0.05)
    assert out["win_unflagged"] == pytest.approx(0.0)
    assert out["flag_share"] == pytest.approx(0.05)
    m = _metrics(out["win"], out["win_trimmed"])
    m["offline"]["models"]["treatment"]["concentration"]["auction_winner"]["win_trimmed_groups"] = 0.0
    assert _verdict(m).status == V.CAUSE


def test_the_bot_filter_drops_the_heavy_users_rows_from_the_evaluation(tmp_path: Path) -> None:
    """``evaluation.bot_filter_rate``: the same world scored without the rows of users requesting
    more than r times the median user's rate (the observable feature, not the bot flag); nothing
    else of the run moves; the attribution switch is that filter."""
    bots = ["world.bot_share=0.1", "world.bot_activity=20", "experiment.arms=[control,treatment]",
            "experiment.treatment.models.l1_hidden=64"]
    plain = run_tiny(tmp_path / "plain", *bots)
    kept = run_tiny(tmp_path / "kept", *bots, "evaluation.bot_filter_rate=1e6")  # filters no one
    filtered = run_tiny(tmp_path / "filtered", *bots, "evaluation.bot_filter_rate=5")
    assert kept["offline"] == plain["offline"] and kept["arms"] == plain["arms"]
    assert filtered["arms"] == plain["arms"]  # serving untouched: the evaluation only
    users = build_marketplace(tiny_config(*bots), Streams(0)).users
    rate = users.request_rate
    assert rate is not None and users.bot is not None
    out = rate > np.log(5)
    assert out[users.bot].mean() > 5 * out[~users.bot].mean()  # bots far more than humans
    win = filtered["offline"]["window"]
    assert win["filtered_rows"] > 0 and 0 < win["filtered_users"] <= out.sum()
    assert plain["offline"]["window"]["filtered_rows"] == 0
    assert win["rows"] + win["filtered_rows"] == plain["offline"]["window"]["rows"]
    rows = [m["offline"]["models"]["treatment"]["concentration"]["auction_winner"]
            for m in (plain, filtered)]
    assert rows[0]["flag_share"] > 0.2 and rows[1]["flag_share"] < rows[0]["flag_share"] / 2
    from sim.report.attribution import HAZARDS, present_hazards
    cfg = tiny_config(*bots)
    assert "outlier_domination" in present_hazards(cfg, plain)
    off = HAZARDS["outlier_domination"][1](cfg)
    assert off.evaluation.bot_filter_rate == 20.0 and off.world == cfg.world
    assert "outlier_domination" not in present_hazards(off, plain)


def test_a_bot_filter_needs_the_request_rate_and_a_rate_above_the_median() -> None:
    from sim.config import ConfigError
    with pytest.raises(ConfigError, match="only a world with bots"):
        tiny_config("evaluation.bot_filter_rate=20")
    with pytest.raises(ConfigError, match="0 .no filter. or more than 1, got 0.5"):
        tiny_config("world.bot_share=0.1", "evaluation.bot_filter_rate=0.5")


def test_the_bot_filter_reads_the_feature_not_the_flag() -> None:
    """``bot_filtered`` drops exactly the rows of users whose observable rate passes the cut: a
    bot under it stays, a human over it goes."""
    from sim.evaluation import bot_filtered
    from sim.models.training_log import WINNER, LoggedRows
    cfg = tiny_config("world.bot_share=0.1", "world.bot_activity=20")
    users = build_marketplace(cfg, Streams(0)).users
    rate, bot = users.request_rate, users.bot
    assert rate is not None and bot is not None
    cut = np.log(8.0)
    # users on the wrong side of the cut for their kind exist in this draw
    assert ((rate <= cut) & bot).any() and ((rate > cut) & ~bot).any()
    user = np.repeat(np.arange(users.n), 2)
    n = user.size
    rows = LoggedRows(
        time=np.zeros(n), arm=np.zeros(n, np.int8), user=user, surface=np.zeros(n, np.int8),
        ad_features=np.zeros((n, 1), np.float32), ad_id=np.zeros(n, np.int64),
        source=np.full(n, WINNER, np.int8), tier=np.zeros(n, np.int8),
        item_version=np.zeros(n, np.int32), query_version=np.zeros(n, np.int32),
        position=np.zeros(n, np.int16), click=np.zeros(n, bool),
        conversion_time=np.full(n, np.inf), true_pcvr=np.zeros(n),
        l1_pcvr=np.zeros(n, np.float32), families=np.zeros(n, np.uint8))
    kept, (dropped_rows, dropped_users) = bot_filtered(rows, users, 8.0)
    assert kept is not None
    assert set(np.unique(kept.user)) == set(np.flatnonzero(rate <= cut))
    assert dropped_users == int((rate > cut).sum()) and dropped_rows == 2 * dropped_users


def test_a_bot_flag_is_the_rate_cut_at_a_threshold() -> None:
    """``world.bot_signal=flag``: the user feature is 1 exactly where the observed rate passes
    ``log(bot_flag_rate)``; the rate itself (what the bot filter reads) and every other draw are
    those of the rate world."""
    from sim.config import ConfigError
    rate_w = WorldConfig(n_users=4000, bot_share=0.05, bot_activity=50.0)
    flag_w = WorldConfig(n_users=4000, bot_share=0.05, bot_activity=50.0, bot_signal="flag",
                         bot_flag_rate=10.0)
    a = build_users(rate_w, TrafficConfig(), np.random.default_rng(4))
    b = build_users(flag_w, TrafficConfig(), np.random.default_rng(4))
    assert a.rate is not None and b.rate is not None and b.bot is not None
    assert np.array_equal(a.rate, b.rate) and np.array_equal(a.features[:, -1], a.rate)
    assert np.array_equal(a.features[:, :-1], b.features[:, :-1])
    assert np.array_equal(b.features[:, -1], (b.rate > np.log(10.0)).astype(np.float32))
    assert b.features[b.bot, -1].mean() > 0.8 and b.features[~b.bot, -1].mean() < 0.05
    with pytest.raises(ConfigError, match="bot_signal"):
        tiny_config("world.bot_signal=flag")  # no bots
    with pytest.raises(ConfigError, match="bot_flag_rate"):
        tiny_config("world.bot_share=0.1", "world.bot_flag_rate=5")  # read only with a flag
