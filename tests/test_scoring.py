"""Offline metrics against independent reference implementations and known values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import expit

from sim.numerics import sigmoid
from sim.scoring import calibration_ratio, ece, log_loss, log_mae, normalized_entropy


def _data(seed: int, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.random(n) < p).astype(float)
    return y, p


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_matches_scipy_bernoulli(seed: int) -> None:
    y, p = _data(seed)
    assert log_loss(y, p) == pytest.approx(-stats.bernoulli.logpmf(y, p).mean(), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_normalized_entropy_matches_reference(seed: int) -> None:
    y, p = _data(seed)
    base = stats.entropy([y.mean(), 1 - y.mean()])  # nats
    assert normalized_entropy(y, p) == pytest.approx(log_loss(y, p) / base, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(n_pos=st.integers(1, 500), n_neg=st.integers(1, 500))
def test_constant_predictor_at_base_rate_has_ne_one(n_pos: int, n_neg: int) -> None:
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    p = np.full(y.size, y.mean())
    assert normalized_entropy(y, p) == pytest.approx(1.0, rel=1e-9)


def test_informative_predictor_beats_base_rate() -> None:
    y, p = _data(11)
    assert normalized_entropy(y, p) < 0.9


def test_calibration_ratio_known_values() -> None:
    assert calibration_ratio(np.array([0, 1]), np.array([0.2, 0.4])) == pytest.approx(0.6)
    y, p = _data(3, 200_000)
    assert calibration_ratio(y, p) == pytest.approx(1.0, abs=0.01)
    assert calibration_ratio(y, 2 * p / 3) == pytest.approx(2 / 3, abs=0.01)


def test_labels_come_first_and_a_swapped_call_fails_loudly() -> None:
    y, p = np.array([0.0, 1.0, 1.0]), np.array([0.2, 0.7, 0.4])
    assert calibration_ratio(y, p) == pytest.approx(1.3 / 2)
    for metric in (calibration_ratio, log_loss, normalized_entropy, ece):
        with pytest.raises(ValueError, match="`y` must hold 0/1 labels"):
            metric(p, y)


def test_log_mae_known_values() -> None:
    assert log_mae(np.array([0.1, 0.2]), np.array([0.1, 0.1])) == pytest.approx(np.log(2) / 2)
    p = np.array([0.05, 0.3])
    assert log_mae(p, p) == 0.0
    assert log_mae(p, 2 * p) == pytest.approx(np.log(2))


def test_ece_reference_and_known_values() -> None:
    y, p = _data(5, 20_000)
    bins = np.minimum((p * 10).astype(int), 9)
    ref = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if np.any(bins == b))
    assert ece(y, p) == pytest.approx(ref, rel=1e-9)
    assert ece(y, p) < 0.02  # calibrated by construction
    assert ece(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize(("fn", "args", "key"), [
    (log_loss, (np.array([0, 2]), np.array([0.5, 0.5])), "`y`"),
    (log_loss, (np.array([0, 1]), np.array([0.5, 1.5])), "`p`"),
    (normalized_entropy, (np.array([1, 1]), np.array([0.5, 0.5])), "both classes"),
    (calibration_ratio, (np.array([0, 0]), np.array([0.5, 0.5])), "no positives"),
    (log_mae, (np.array([0.5]), np.array([0.5, 0.5])), "teacher"),
    (ece, (np.array([0, 1]), np.array([0.5]),), "shape"),
])
def test_bad_input_names_the_argument(fn, args, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=key):
        fn(*args)


def test_sigmoid_matches_scipy_and_reaches_its_limits_without_a_warning() -> None:
    x = np.array([-1e4, -710.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail here
        got = sigmoid(x)
    assert got.dtype == np.float64 and got[0] == 0.0 and got[-1] == 1.0
    np.testing.assert_allclose(got, expit(x.astype(np.float64)), rtol=1e-15, atol=1e-300)
