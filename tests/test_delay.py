"""Conversion delays: the exponential is the old closed form bit for bit, the lognormal mixture's
quantile inverts its CDF, and its mean and shares are what the parameters say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.autobidding import matured_share
from sim.config import ConfigError
from sim.world.delay import ConversionDelay

from conftest import tiny_config

HOUR, DAY = 3600.0, 86_400.0
# a fast and a slow component: about a third within an hour, half within a day, a tail of weeks
CRITEO_LIKE = ConversionDelay(kind="lognormal", weights=(0.4, 0.6), medians_s=(0.25 * HOUR, 5 * DAY),
                              sigmas=(1.2, 1.5))


def test_the_exponential_is_the_closed_form() -> None:
    u = np.random.default_rng(0).random(10_000)
    d = ConversionDelay(kind="exponential", mean_s=6 * HOUR)
    assert np.array_equal(d.quantile(u), -6 * HOUR * np.log1p(-u))
    np.testing.assert_allclose(d.cdf(np.array([-1.0, 0.0, 6 * HOUR])), [0.0, 0.0, 1 - np.exp(-1)])
    assert d.mean() == 6 * HOUR


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 1.0), st.floats(60.0, 30 * DAY), st.floats(0.2, 3.0)),
                min_size=1, max_size=3),
       st.lists(st.floats(0.001, 0.999), min_size=1, max_size=20))
def test_the_mixture_quantile_inverts_its_cdf(parts: list[tuple[float, float, float]],
                                              us: list[float]) -> None:
    w = np.array([p[0] for p in parts])
    d = ConversionDelay(kind="lognormal", weights=tuple(w / w.sum()),
                        medians_s=tuple(p[1] for p in parts), sigmas=tuple(p[2] for p in parts))
    u = np.array(us)
    t = d.quantile(u)
    assert np.all(t > 0)
    np.testing.assert_allclose(d.cdf(t), u, atol=1e-6)
    assert np.all(np.diff(d.quantile(np.sort(u))) >= 0)  # monotone: one uniform, one order


def test_a_criteo_like_mixture_has_the_shares_and_mean_it_states() -> None:
    d = CRITEO_LIKE
    assert d.cdf(HOUR) == pytest.approx(0.4 * 0.873 + 0.6 * 0.0, abs=0.01)  # ~35% in an hour
    assert 0.45 < float(d.cdf(DAY)) < 0.55  # about half within a day
    assert float(d.cdf(30 * DAY)) > 0.9
    draws = d.quantile(np.random.default_rng(1).random(400_000))
    assert np.mean(draws <= DAY) == pytest.approx(float(d.cdf(DAY)), abs=0.003)
    assert np.mean(draws) == pytest.approx(d.mean(), rel=0.05)


def test_the_autobidder_matures_spend_by_the_mixture_cdf() -> None:
    ages = np.array([-1.0, 0.0, HOUR, DAY, 10 * DAY, 40 * DAY])
    window = 30 * DAY
    f = matured_share(ages, CRITEO_LIKE, window)
    want = CRITEO_LIKE.cdf(np.clip(ages, 0, window)) / CRITEO_LIKE.cdf(window)
    np.testing.assert_allclose(f, np.where(ages >= 0, want, 0.0))
    assert f[-1] == 1.0 and f[0] == 0.0


def test_a_mixture_must_be_whole_and_only_with_its_kind() -> None:
    good = ["world.conversion_delay=lognormal", "world.conversion_delay_weights=[0.4,0.6]",
            "world.conversion_delay_medians_s=[900,432000]", "world.conversion_delay_sigmas=[1.2,1.5]"]
    cfg = tiny_config(*good)
    assert ConversionDelay.from_config(cfg.world) == CRITEO_LIKE
    for bad, words in (
        ([*good[:3], "world.conversion_delay_sigmas=[1.2]"], "one entry per mixture component"),
        (["world.conversion_delay=lognormal", "world.conversion_delay_weights=[0.4,0.5]",
          "world.conversion_delay_medians_s=[900,432000]", "world.conversion_delay_sigmas=[1,1]"],
         "must sum to 1"),
        (good[1:], "describe a lognormal mixture"),  # the components without the kind
        (["world.conversion_delay=weibull"], "conversion_delay"),
        ([*good[:3], "world.conversion_delay_sigmas=[1.2,0]"], "conversion_delay_sigmas"),
    ):
        with pytest.raises(ConfigError, match=words):
            tiny_config(*bad)


def test_positives_split_by_what_is_known_at_training() -> None:
    """``LoggedRows.positives``: known = clicked impressions converted by ``t``; late = converted
    after ``t`` but within the window of the click; candidates and lost conversions count in
    neither."""
    from sim.models.training_log import FULL, WINNER, LoggedRows
    n = 6
    rows = LoggedRows(
        time=np.zeros(n), arm=np.zeros(n, np.int8), user=np.zeros(n, np.int64),
        surface=np.zeros(n, np.int8), ad_features=np.zeros((n, 1), np.float32),
        ad_id=np.zeros(n, np.int64), source=np.array([WINNER] * 5 + [FULL], np.int8),
        tier=np.zeros(n, np.int8), item_version=np.zeros(n, np.int32),
        query_version=np.zeros(n, np.int32), position=np.zeros(n, np.int16),
        click=np.array([True, True, True, True, False, True]),
        conversion_time=np.array([50.0, 150.0, 5000.0, np.inf, 60.0, 70.0]),
        true_pcvr=np.zeros(n), l1_pcvr=np.zeros(n, np.float32), families=np.zeros(n, np.uint8))
    # at t=100: row 0 known; rows 1 and 2 late (the labels count a conversion whatever the
    # attribution window, so the late ones do too); row 3 never converts; row 4 not clicked;
    # row 5 a candidate
    assert rows.positives(100.0) == (1, 2)
    assert rows.positives(1000.0) == (2, 1)
    assert rows.positives(1e9) == (3, 0)


def test_a_heavy_tail_leaves_labels_to_come_and_no_delay_leaves_none(tmp_path: Path) -> None:
    from conftest import run_tiny
    heavy = run_tiny(tmp_path / "heavy", "world.conversion_delay=lognormal",
                     "world.conversion_delay_weights=[0.4,0.6]",
                     "world.conversion_delay_medians_s=[900,432000]",
                     "world.conversion_delay_sigmas=[1.2,1.5]", "world.attribution_window_s=2592000")
    none = run_tiny(tmp_path / "none", "world.conversion_delay_mean_s=0")
    (_, h), = heavy["delayed_feedback"].items()
    (_, z), = none["delayed_feedback"].items()
    assert h["releases"] == z["releases"] >= 1
    assert z["late_positives"] == 0 and z["late_share"] == 0.0
    assert h["late_positives"] > 0 and h["late_share"] > 0.3  # most of the slow component


def test_the_exponential_mean_is_not_read_by_a_mixture() -> None:
    mix = ["world.conversion_delay=lognormal", "world.conversion_delay_weights=[1.0]",
           "world.conversion_delay_medians_s=[3600]", "world.conversion_delay_sigmas=[1.0]"]
    assert tiny_config(*mix).world.conversion_delay == "lognormal"
    with pytest.raises(ConfigError, match="conversion_delay_mean_s"):
        tiny_config(*mix, "world.conversion_delay_mean_s=7200")


def test_a_conversion_has_its_keyed_delay_and_nothing_else_has_one() -> None:
    """Only conversions are given a delay (the bisection is the costly part of an outcome draw),
    and a conversion's delay is its own keyed quantile, whatever is drawn beside it."""
    from sim.rng import CONVERSION_DELAY, keyed_uniform
    from sim.world.response import draw_outcomes

    rid = np.arange(2000, dtype=np.int64)[:, None]
    ads = np.arange(3, dtype=np.int64)[None, :].repeat(2000, 0)
    out = draw_outcomes(7, rid, ads, np.full((2000, 3), 0.5), np.full((2000, 3), 0.3), CRITEO_LIKE)
    conv = out.conversion
    assert 800 < conv.sum() < 1000 and np.isinf(out.delay_s[~conv]).all()
    want = CRITEO_LIKE.quantile(keyed_uniform(7, np.broadcast_to(rid, ads.shape), ads,
                                              CONVERSION_DELAY))
    assert np.array_equal(out.delay_s[conv], want[conv])
    one = draw_outcomes(7, rid[:50], ads[:50, :1], np.full((50, 1), 0.5), np.full((50, 1), 0.3),
                        CRITEO_LIKE)
    assert np.array_equal(one.delay_s[one.conversion], want[:50, :1][one.conversion])
