"""The auction against auction theory, exact examples, and property tests of its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.auction import RULES, allocate

TOL = 1e-9


def test_exact_small_auction_all_rules() -> None:
    bids = np.array([[3.0, 1.0, 2.0, np.nan], [0.5, 0.4, 0.1, 0.2]])
    sc = np.array([1.0, 0.5])
    expected = {
        "gsp": [[2.0, 1.0], [0.4, 0.3]],
        "second_price": [[1.0, 1.0], [0.3, 0.3]],
        "first_price": [[3.0, 2.0], [0.5, 0.4]],
        # slot 1: (1 - .5) * 2 + .5 * 1 = 1.5; slot 2: .5 * 1 / .5 = 1. Row 2: reserve floors 0.1.
        "vcg": [[1.5, 1.0], [0.35, 0.3]],
    }
    for rule, prices in expected.items():
        res = allocate(bids, n_slots=2, reserve=0.3, rule=rule, slot_ctr=sc)
        assert res.winners.tolist() == [[0, 2], [0, 1]], rule
        np.testing.assert_allclose(res.prices, prices, err_msg=rule)


def test_quality_ranks_by_score_and_prices_per_unit() -> None:
    # Per-click bids 1.0 and 2.0 with CTRs 0.5 and 0.1: scores 0.5 and 0.2.
    res = allocate(np.array([[1.0, 2.0]]), quality=np.array([[0.5, 0.1]]), rule="gsp")
    assert res.winners.tolist() == [[0]]
    assert res.prices[0, 0] == pytest.approx(0.2 / 0.5)


def test_ties_go_to_lower_column() -> None:
    res = allocate(np.array([[1.0, 1.0, 1.0]]), n_slots=2)
    assert res.winners.tolist() == [[0, 1]]


def test_empty_slots_when_bids_below_reserve() -> None:
    res = allocate(np.array([[0.5, 0.05, 0.01]]), n_slots=3, reserve=0.1)
    assert res.winners.tolist() == [[0, -1, -1]]
    assert res.prices.tolist() == [[0.1, 0.0, 0.0]]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_second_price_revenue_uniform_bidders(n: int) -> None:
    # E[second highest of n U(0,1)] = (n - 1) / (n + 1).
    rng = np.random.default_rng(n)
    rev = allocate(rng.random((200_000, n)), rule="second_price").prices[:, 0]
    se = rev.std() / np.sqrt(rev.size)
    assert abs(rev.mean() - (n - 1) / (n + 1)) < 4 * se


@pytest.mark.parametrize(("n", "r"), [(2, 0.5), (3, 0.3)])
def test_second_price_revenue_with_reserve(n: int, r: float) -> None:
    # Myerson: E[R] = n * int_r^1 (2v - 1) v^(n-1) dv = 2n(1 - r^(n+1))/(n+1) - (1 - r^n).
    theory = 2 * n * (1 - r ** (n + 1)) / (n + 1) - (1 - r**n)
    rng = np.random.default_rng(10 + n)
    res = allocate(rng.random((200_000, n)), rule="second_price", reserve=r)
    rev = res.prices[:, 0]
    assert abs(rev.mean() - theory) < 4 * rev.std() / np.sqrt(rev.size)
    if n == 2:
        assert theory == pytest.approx(5 / 12)


def test_first_price_truthful_revenue_is_expected_maximum() -> None:
    n = 4
    rng = np.random.default_rng(7)
    rev = allocate(rng.random((200_000, n)), rule="first_price").prices[:, 0]
    assert abs(rev.mean() - n / (n + 1)) < 4 * rev.std() / np.sqrt(rev.size)


def test_gsp_two_slots_revenue() -> None:
    # Two slots, n uniform bidders: slot 1 pays the 2nd, slot 2 the 3rd order statistic.
    n = 5
    rng = np.random.default_rng(3)
    rev = allocate(rng.random((200_000, n)), rule="gsp", n_slots=2).prices.sum(1)
    theory = (n - 1) / (n + 1) + (n - 2) / (n + 1)
    assert abs(rev.mean() - theory) < 4 * rev.std() / np.sqrt(rev.size)


bid_matrix = arrays(
    np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)),
    elements=st.one_of(st.just(np.nan), st.floats(0.0, 10.0, allow_subnormal=False)),
)


@settings(max_examples=300, deadline=None)
@given(bids=bid_matrix, n_slots=st.integers(1, 4), reserve=st.floats(0.0, 3.0),
       rule=st.sampled_from(RULES), data=st.data())
def test_auction_invariants(bids: np.ndarray, n_slots: int, reserve: float, rule: str,
                            data: st.DataObject) -> None:
    quality = data.draw(arrays(np.float64, bids.shape, elements=st.floats(0.01, 1.0)))
    sc = np.sort(data.draw(arrays(np.float64, (n_slots,), elements=st.floats(0.1, 1.0))))[::-1]
    res = allocate(bids, quality=quality, n_slots=n_slots, reserve=reserve, rule=rule,
                   slot_ctr=sc.copy())
    assert res.winners.shape == (bids.shape[0], n_slots)
    score = np.nan_to_num(bids * quality, nan=-1.0)
    for r in range(bids.shape[0]):
        won = res.winners[r][res.winners[r] >= 0]
        assert len(set(won.tolist())) == won.size  # no ad wins two slots
        filled = res.winners[r] >= 0
        # filled slots come first, then empty ones
        assert not np.any(np.diff(filled.astype(int)) > 0)
        n_eligible = int(np.sum((score[r] > 0) & (score[r] >= reserve)))
        assert won.size == min(n_eligible, n_slots)  # empty slots only when bids are short
        for k, c in enumerate(won):
            b, q = bids[r, c], quality[r, c]
            p = res.prices[r, k]
            assert b * q >= reserve  # reserve respected
            assert p <= b * (1 + TOL) + TOL  # price <= bid
            assert p * q >= reserve * (1 - TOL) - TOL  # price covers the reserve
        assert np.all(np.diff(score[r][won]) <= TOL)  # ranked by score


@settings(max_examples=200, deadline=None)
@given(bids=arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 8)),
                   elements=st.floats(0.01, 10.0)), n_slots=st.integers(1, 3))
def test_vcg_revenue_never_exceeds_gsp(bids: np.ndarray, n_slots: int) -> None:
    sc = np.linspace(1.0, 0.4, n_slots)
    gsp = allocate(bids, n_slots=n_slots, rule="gsp", slot_ctr=sc)
    vcg = allocate(bids, n_slots=n_slots, rule="vcg", slot_ctr=sc)
    assert np.array_equal(gsp.winners, vcg.winners)
    assert np.all((vcg.prices * sc).sum(1) <= (gsp.prices * sc).sum(1) + 1e-9)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"n_slots": 0}, "n_slots"), ({"reserve": -1.0}, "reserve"), ({"rule": "dutch"}, "rule"),
    ({"slot_ctr": np.array([0.5, 1.0])}, "slot_ctr"),
])
def test_bad_arguments_name_the_parameter(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        allocate(np.ones((2, 3)), **{"n_slots": 2, **kwargs})


def test_negative_bid_rejected() -> None:
    with pytest.raises(ValueError, match="bids"):
        allocate(np.array([[1.0, -0.5]]))


def test_bid_scale_multiplies_every_objective() -> None:
    from sim.bidding import make_bids
    from sim.world.catalog import Advertisers

    adv = Advertisers(np.array([0, 1, 2], np.int8), np.array([4.0, 0, 0]), np.array([0, 1.0, 0]),
                      np.array([0, 0, 100.0]), np.ones(3), np.zeros((3, 2)))
    who = np.array([[0, 1, 2]])
    pctr, pcvr, m = np.full((1, 3), 0.1), np.full((1, 3), 0.2), np.array([1.0, 0.5, 1.0])
    base = make_bids(adv, who, pctr, pcvr, m)
    np.testing.assert_allclose(base.bid, [[4 * 0.1 * 0.2, 0.5, 0.1]])
    np.testing.assert_allclose(base.quality, [[1.0, 0.1, 1.0]])
    np.testing.assert_allclose(make_bids(adv, who, pctr, pcvr, m, 1.5).bid, 1.5 * base.bid)
