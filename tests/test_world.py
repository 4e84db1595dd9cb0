"""The ground-truth world: keyed draws, traffic, catalog churn, the response model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sim.clock import DAY_S
from sim.config.schema import TrafficConfig, WorldConfig
from sim.rng import CLICK, CONVERSION, Streams, keyed_uniform
from sim.world.catalog import build_advertisers, build_catalog, build_feature_maps, replace_ads
from sim.world.response import build_truth, true_rates
from sim.world.traffic import cumulative_rate, day_share, draw_requests
from sim.world.users import build_users


def test_keyed_uniform_is_uniform_and_pure() -> None:
    u = keyed_uniform(5, np.arange(200_000), 17, CLICK)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    again = keyed_uniform(5, np.arange(200_000), 17, CLICK)
    assert np.array_equal(u, again)
    other_event = keyed_uniform(5, np.arange(200_000), 17, CONVERSION)
    assert abs(np.corrcoef(u, other_event)[0, 1]) < 0.01


@settings(max_examples=50, deadline=None)
@given(req=st.integers(0, 2**40), ad=st.integers(0, 2**30), seed=st.integers(0, 2**31))
def test_keyed_draw_depends_only_on_its_keys(req: int, ad: int, seed: int) -> None:
    batch = keyed_uniform(seed, np.array([req, req + 1]), np.array([ad, ad]), CLICK)
    single = keyed_uniform(seed, np.array([req]), ad, CLICK)
    assert batch[0] == single[0]
    assert 0.0 <= batch[0] < 1.0


def test_named_streams_are_independent_of_each_other() -> None:
    a = Streams(3).get("traffic").random(5)
    s = Streams(3)
    s.get("catalog").random(100)  # using another component first does not shift traffic
    assert np.array_equal(a, s.get("traffic").random(5))
    assert not np.array_equal(a, Streams(4).get("traffic").random(5))


def test_adding_advertisers_shifts_neither_feature_maps_nor_truth() -> None:
    """Each part of the world draws from its own named stream."""
    from sim.world.marketplace import build_marketplace

    from conftest import tiny_config

    a = build_marketplace(tiny_config(), Streams(0))
    b = build_marketplace(tiny_config("world.n_advertisers=15"), Streams(0))
    for f in dataclasses.fields(a.truth):
        assert np.array_equal(np.asarray(getattr(a.truth, f.name)),
                              np.asarray(getattr(b.truth, f.name))), f.name
    for f in dataclasses.fields(a.maps):
        assert np.array_equal(np.asarray(getattr(a.maps, f.name)),
                              np.asarray(getattr(b.maps, f.name))), f.name
    assert np.array_equal(a.users.latent, b.users.latent)


def test_diurnal_traffic_integral_and_day_share() -> None:
    cfg = TrafficConfig(requests_per_day=10_000)
    assert cumulative_rate(DAY_S, cfg) == pytest.approx(10_000)
    assert day_share(0.0, cfg) == 0.0
    shares = [day_share(t, cfg) for t in np.linspace(0, DAY_S - 1, 50)]
    assert np.all(np.diff(shares) > 0)
    # the peak hour has the highest rate: the share grows fastest there
    fast = np.argmax(np.diff([day_share(h * 3600.0, cfg) for h in range(25)]))
    assert abs(fast - cfg.peak_hour) <= 1


# AuctionNet's published shape has a peak/trough near 11; any 24 shares summing to 1 will do here
HOURLY = np.array([2, 1, 1, 1, 1, 1.5, 3, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 8, 9, 10, 9, 6, 3.5])
HOURLY = HOURLY / HOURLY.sum()


def test_hourly_shares_give_each_hour_its_share_exactly() -> None:
    cfg = TrafficConfig(requests_per_day=24_000, hourly_shares=HOURLY.tolist())
    hours = np.arange(0, 3 * DAY_S + 1, 3600.0)
    per_hour = np.diff(np.asarray(cumulative_rate(hours, cfg)))
    np.testing.assert_allclose(per_hour, 24_000 * np.tile(HOURLY, 3))
    assert isinstance(cumulative_rate(1800.0, cfg), float)
    assert cumulative_rate(1800.0, cfg) == pytest.approx(24_000 * HOURLY[0] / 2)  # linear inside
    np.testing.assert_allclose([day_share(DAY_S + h * 3600.0, cfg) for h in range(24)],
                               np.concatenate(([0.0], np.cumsum(HOURLY)[:-1])), atol=1e-12)
    # flat shares are the cosine with no swing
    flat = TrafficConfig(requests_per_day=24_000, hourly_shares=[1 / 24] * 24)
    t = np.linspace(0, 2 * DAY_S, 97)
    np.testing.assert_allclose(cumulative_rate(t, flat),
                               cumulative_rate(t, TrafficConfig(requests_per_day=24_000,
                                                                diurnal_amplitude=0.0)))
    # draws follow the shares: the quietest hour against the busiest
    w = WorldConfig(n_users=100)
    users = build_users(w, cfg, np.random.default_rng(0))
    rng = np.random.default_rng(2)
    counts = [len(draw_requests(rng, h, h + 3600, cfg, users, np.asarray(w.surface_mix), 0))
              for h in np.arange(0, DAY_S, 3600.0)]
    z = (np.array(counts) - 24_000 * HOURLY) / np.sqrt(24_000 * HOURLY)
    assert np.all(np.abs(z) < 5)


def test_hourly_shares_must_be_a_day_and_alone() -> None:
    from sim.config import ConfigError

    from conftest import tiny_config
    good = "traffic.hourly_shares=[" + ",".join(repr(float(x)) for x in HOURLY) + "]"
    assert tiny_config(good).traffic.hourly_shares == pytest.approx(HOURLY.tolist())
    for bad, words in ((["traffic.hourly_shares=[0.5,0.5]"], "24 shares"),
                       (["traffic.hourly_shares=[" + ",".join(["0.05"] * 24) + "]"], "summing to 1"),
                       ([good, "traffic.peak_hour=12"], "peak_hour"),
                       (["traffic.hourly_shares=[" + ",".join(["-0.1"] + ["0.05"] * 22 + ["0.0"])
                         + "]"], "must be a share in")):
        with pytest.raises(ConfigError, match=words):
            tiny_config(*bad)


def test_request_counts_are_poisson_with_the_diurnal_mean() -> None:
    w, cfg = WorldConfig(n_users=100), TrafficConfig(requests_per_day=50_000)
    users = build_users(w, cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    mix = np.asarray(w.surface_mix)
    counts = [len(draw_requests(rng, t, t + 3600, cfg, users, mix, 0))
              for t in np.arange(0, DAY_S, 3600)]
    expected = [cumulative_rate(t + 3600, cfg) - cumulative_rate(t, cfg)
                for t in np.arange(0, DAY_S, 3600)]
    z = (np.array(counts) - expected) / np.sqrt(expected)
    assert np.all(np.abs(z) < 5)
    assert sum(counts) == pytest.approx(50_000, rel=0.03)
    b = draw_requests(rng, 0, 600, cfg, users, mix, 42)
    assert b.request_id[0] == 42 and np.all(np.diff(b.time) >= 0)
    assert np.all((b.time >= 0) & (b.time < 600))


def test_churn_replaces_expired_ads_with_new_ids_of_the_same_advertiser() -> None:
    w = WorldConfig(n_advertisers=5, ads_per_advertiser=4, ad_lifetime_days=0.5)
    rng = np.random.default_rng(0)
    adv = build_advertisers(w, rng)
    maps = build_feature_maps(w, rng)
    cat = build_catalog(w, adv, maps, rng)
    owner_before, ids_before = cat.advertiser.copy(), cat.ad_id.copy()
    expired = cat.expires_at <= DAY_S
    slots = replace_ads(cat, DAY_S, adv, w, maps, rng)
    assert np.array_equal(np.sort(slots), np.flatnonzero(expired))
    assert np.array_equal(cat.advertiser, owner_before)
    assert np.all(cat.ad_id[slots] >= ids_before.max() + 1)
    assert len(np.unique(cat.ad_id)) == cat.n
    assert np.all(cat.expires_at[slots] > DAY_S)


def test_true_rates_follow_quality_and_surface() -> None:
    w = WorldConfig()
    truth = build_truth(w, np.random.default_rng(0))
    d = w.latent_dim
    u = np.zeros((2, d))
    v = np.zeros((2, 2, d))
    q = np.array([[0.0, 1.0], [0.0, 1.0]])
    ctr, cvr = true_rates(truth, u, np.array([0, 2]), v, np.zeros((2, 2)), q)
    assert ctr[0, 0] == pytest.approx(1 / (1 + np.exp(-w.base_ctr_logit)))
    assert cvr[0, 1] > cvr[0, 0]  # higher latent quality converts more
    assert cvr[1, 0] > cvr[0, 0]  # shopping surface converts more than home feed


def test_budgets_and_targets_drawn_jointly() -> None:
    """``budget_target_corr`` correlates the logs as asked, keeps both marginals, and at 0 leaves
    every draw as it was."""
    base = WorldConfig(n_advertisers=20_000)
    a = build_advertisers(base, np.random.default_rng(3))
    for rho in (-0.97, 0.5):
        b = build_advertisers(dataclasses.replace(base, budget_target_corr=rho),
                              np.random.default_rng(3))
        assert np.corrcoef(np.log(b.target_cpa), np.log(b.daily_budget))[0, 1] == pytest.approx(
            rho, abs=0.02)
        assert np.array_equal(a.target_cpa, b.target_cpa) and np.array_equal(a.centroid, b.centroid)
        assert np.std(np.log(b.daily_budget)) == pytest.approx(base.budget_sigma, rel=0.03)
        assert np.mean(b.daily_budget) == pytest.approx(base.daily_budget_mean, rel=0.03)
    same = build_advertisers(dataclasses.replace(base, budget_target_corr=0.0),
                             np.random.default_rng(3))
    assert np.array_equal(a.daily_budget, same.daily_budget)
    assert abs(np.corrcoef(np.log(a.target_cpa), np.log(a.daily_budget))[0, 1]) < 0.03
