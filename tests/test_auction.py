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

    adv = Advertisers(objective=np.array([0, 1, 2], np.int8), target_cpa=np.array([4.0, 0, 0]),
                      max_cpc=np.array([0, 1.0, 0]), cpm_price=np.array([0, 0, 100.0]),
                      daily_budget=np.ones(3), centroid=np.zeros((3, 2)))
    who = np.array([[0, 1, 2]])
    pctr, pcvr, m = np.full((1, 3), 0.1), np.full((1, 3), 0.2), np.array([1.0, 0.5, 1.0])
    base = make_bids(adv, who, pctr, pcvr, m)
    np.testing.assert_allclose(base.bid, [[4 * 0.1 * 0.2, 0.5, 0.1]])
    np.testing.assert_allclose(base.quality, [[1.0, 0.1, 1.0]])
    np.testing.assert_allclose(make_bids(adv, who, pctr, pcvr, m, 1.5).bid, 1.5 * base.bid)


def test_no_candidate_columns_leave_every_slot_empty() -> None:
    res = allocate(np.zeros((2, 0)), n_slots=3, rule="vcg", slot_ctr=np.array([1.0, 0.7, 0.5]))
    assert res.winners.tolist() == [[-1, -1, -1]] * 2
    assert not res.prices.any() and not res.payments.any()


# Mixed bidders: column 0 per click (bid 2.0 at pCTR 0.5: score 1.0), columns 1 and 2 per
# impression (0.9, 0.8), column 3 per click (1.4 at 0.5: score 0.7); slots deliver (1, .75, .55).
MIXED_BIDS = np.array([[2.0, 0.9, 0.8, 1.4]])
MIXED_Q = np.array([[0.5, 1.0, 1.0, 0.5]])
SLOT_CTR = np.array([1.0, 0.75, 0.55])


@pytest.mark.parametrize(("rule", "reserve", "prices", "payments"), [
    # slot k pays the next score e_{k+1} per unit: per click 0.9 / 0.5; per impression x a_k
    ("gsp", 0.0, [1.8, 0.8, 0.7], [0.9, 0.8 * 0.75, 0.7 * 0.55]),
    ("second_price", 0.0, [1.4, 0.7, 0.7], [0.7, 0.7 * 0.75, 0.7 * 0.55]),
    ("first_price", 0.0, [2.0, 0.9, 0.8], [1.0, 0.9 * 0.75, 0.8 * 0.55]),
    # VCG: sum_{j>=k} (a_j - a_{j+1}) e_{j+1}: .25 x .9 + .2 x .8 + .55 x .7 = .77; .545; .385
    ("vcg", 0.0, [0.77 / 0.5, 0.545 / 0.75, 0.385 / 0.55], [0.77, 0.545, 0.385]),
    # reserve 0.75 drops column 3 (score 0.7); the last slot's externality is the reserve:
    # .225 + .16 + .55 x .75 = .7975; .16 + .4125 = .5725; .4125
    ("vcg", 0.75, [0.7975 / 0.5, 0.5725 / 0.75, 0.75], [0.7975, 0.5725, 0.4125]),
])
def test_mixed_bidders_pay_for_what_their_slot_delivers(rule: str, reserve: float,
                                                       prices: list[float],
                                                       payments: list[float]) -> None:
    res = allocate(MIXED_BIDS, quality=MIXED_Q, n_slots=3, reserve=reserve, rule=rule,
                   slot_ctr=SLOT_CTR)
    assert res.winners.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(res.prices[0], prices, rtol=1e-12)
    np.testing.assert_allclose(res.payments[0], payments, rtol=1e-12)


def test_vcg_per_impression_charge_is_the_externality() -> None:
    """A worked example: slot 3 of (1, .75, .55) delivers 0.55 x value 0.8 = 0.44; its VCG
    payment is .55 x .7 = .385 per impression, not the 0.7 per unit once charged."""
    res = allocate(np.array([[1.0, 0.9, 0.8, 0.7]]), n_slots=3, rule="vcg", slot_ctr=SLOT_CTR)
    assert res.payments[0, 2] == pytest.approx(0.385)
    assert res.payments[0, 2] <= 0.55 * 0.8


@settings(max_examples=200, deadline=None)
@given(bids=arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 8)),
                   elements=st.floats(0.01, 10.0)), n_slots=st.integers(1, 4),
       rule=st.sampled_from(RULES), data=st.data())
def test_per_impression_payment_never_exceeds_what_the_slot_delivers(
        bids: np.ndarray, n_slots: int, rule: str, data: st.DataObject) -> None:
    """A per-impression bidder whose bid is its value per top-slot impression pays at most
    a_k x bid at slot k: with calibrated pCVR an oCPM advertiser's expected CPA is at most its
    target at every slot."""
    sc = np.sort(data.draw(arrays(np.float64, (n_slots,), elements=st.floats(0.1, 1.0))))[::-1]
    res = allocate(bids, n_slots=n_slots, rule=rule, slot_ctr=sc.copy())
    won = res.winners >= 0
    value = np.where(won, np.take_along_axis(bids, np.maximum(res.winners, 0), axis=1), 0.0)
    assert np.all(res.payments <= sc[None, :] * value * (1 + 1e-12) + 1e-12)


def _reference_order(values: np.ndarray) -> np.ndarray:
    """Every row sorted by (-value, column): the documented tie rule, computed the slow way."""
    return np.array([np.lexsort((np.arange(row.size), -row)) for row in values])


@pytest.mark.parametrize("n_cols", [6, 40])
def test_ties_go_to_the_lower_column_on_tie_heavy_rows(n_cols: int) -> None:
    from sim.topk import top_k

    rng = np.random.default_rng(n_cols)
    values = rng.integers(0, 3, size=(2000, n_cols)).astype(np.float64)  # ties everywhere
    values[rng.random(values.shape) < 0.1] = -np.inf
    ref = _reference_order(values)
    for k in (1, 3, n_cols - 1, n_cols, n_cols + 5):  # partition branch and sort branch
        assert np.array_equal(top_k(values, k), ref[:, :min(k, n_cols)]), k
    res = allocate(np.where(np.isfinite(values), values + 1.0, np.nan), n_slots=3)
    expect = np.where(np.isfinite(np.take_along_axis(values, ref[:, :3], axis=1)), ref[:, :3], -1)
    assert np.array_equal(res.winners, expect)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, -0.5])
def test_non_finite_or_negative_bids_are_refused_not_dropped(bad: float) -> None:
    with pytest.raises(ValueError, match=r"`bids` must be finite and >= 0.*\[0, 1\]"):
        allocate(np.array([[1.0, bad, 0.5]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.1])
def test_invalid_quality_of_a_present_bid_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"`quality` must be finite.*\[0, 2\]"):
        allocate(np.array([[1.0, 0.7, 0.5]]), quality=np.array([[1.0, 1.0, bad]]))
    # a missing candidate's quality is not read
    res = allocate(np.array([[1.0, 0.7, np.nan]]), quality=np.array([[1.0, 1.0, bad]]))
    assert res.winners.tolist() == [[0]]


def _vcg_brute_force(score: np.ndarray, a: np.ndarray, reserve: float) -> dict[int, float]:
    """Each winner's VCG charge per impression as the externality it imposes, the slow way:
    the others' welfare (sum of slot units x score, the seller's reserve filling any slot no one
    else takes) without it, minus their welfare with it in its slot."""
    n = a.size
    ok = [j for j in np.argsort(-score, kind="stable") if score[j] > 0 and score[j] >= reserve]
    winners = ok[:n]

    def welfare(scores: list[float], skip: int | None) -> float:
        slots = [k for k in range(n) if k != skip]
        padded = scores + [reserve] * n
        return float(sum(a[k] * padded[i] for i, k in enumerate(slots)))

    out = {}
    for k, w in enumerate(winners):
        others = [float(score[j]) for j in ok if j != w]
        out[int(w)] = welfare(others, None) - welfare(others, k)
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n_cand=st.integers(1, 7), n_slots=st.integers(1, 4),
       reserve=st.sampled_from([0.0, 0.05, 0.3]))
def test_vcg_charge_is_the_brute_force_externality_for_mixed_bidders(
        data: st.DataObject, n_cand: int, n_slots: int, reserve: float) -> None:
    """Random mixes of per-click (quality = pCTR) and per-impression (quality 1) bidders with a
    reserve: each winner's expected charge per impression is the welfare it takes from the
    others, computed by re-running the assignment without it."""
    bids = data.draw(arrays(np.float64, (1, n_cand), elements=st.floats(0.01, 2.0)))
    per_click = data.draw(arrays(np.bool_, (1, n_cand)))
    ctr = data.draw(arrays(np.float64, (1, n_cand), elements=st.floats(0.02, 1.0)))
    quality = np.where(per_click, ctr, 1.0)
    a = np.sort(data.draw(arrays(np.float64, (n_slots,), elements=st.floats(0.1, 1.0))))[::-1]
    res = allocate(bids, quality=quality, n_slots=n_slots, reserve=reserve, rule="vcg",
                   slot_ctr=a.copy())
    expect = _vcg_brute_force((bids * quality)[0], a, reserve)
    won = {int(w): k for k, w in enumerate(res.winners[0]) if w >= 0}
    assert set(won) == set(expect)
    for w, k in won.items():
        assert res.payments[0, k] == pytest.approx(expect[w], rel=1e-9, abs=1e-12)
