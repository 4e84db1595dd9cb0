"""The market's opening: the first day's multipliers from the desk's controller run on a
forecast (closed forms on synthetic spend functions), and in a tiny world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sim.clock import DAY_S
from sim.config.schema import PacingConfig
from sim.pacing import ERROR_CLIP

from conftest import read_log, run_tiny


def _rounds(spend_per_day, budget, rounds: int = 12, start: float = 1.0):  # type: ignore[no-untyped-def]
    from sim.opening import controller_rounds

    cfg = PacingConfig()
    budget = np.asarray(budget, dtype=float)
    per_interval = cfg.interval_s / DAY_S
    return controller_rounds(np.full(budget.shape, start),
                             lambda m: spend_per_day(m) * per_interval, budget, cfg, rounds,
                             cfg.max_multiplier, cfg.min_multiplier, ERROR_CLIP)


def test_the_forecast_reaches_the_closed_form_optimum_of_a_stationary_market() -> None:
    """Value 1 per auction, one competing bid ~ U[0, 1], second price: at multiplier m an
    auction costs m^2 / 2 in expectation, so a budget of b per auction is spent at m = sqrt(2b);
    two advertisers, b = 1/8 and 1/32: m = 0.5 and 0.25, from the ceiling in 12 rounds."""
    n = 10_000  # auctions a day
    m, evaluated, spend = _rounds(lambda m: n * m**2 / 2, [n / 8, n / 32])
    np.testing.assert_allclose(m, [0.5, 0.25], rtol=0.02)
    np.testing.assert_allclose(spend, (n * evaluated**2 / 2) * PacingConfig().interval_s / DAY_S)


def test_an_advertiser_that_cannot_spend_its_budget_stays_at_its_ceiling() -> None:
    m, _, _ = _rounds(lambda m: 50.0 * m, [100.0])
    assert m[0] == PacingConfig().max_multiplier


def test_an_advertiser_without_a_budget_keeps_its_start() -> None:
    m, _, _ = _rounds(lambda m: 50.0 * m, [0.0], start=0.7)
    assert m[0] == 0.7


@pytest.mark.parametrize("cliff", [0.05, 0.3, 0.8])
def test_a_bidder_on_a_cliff_ends_within_one_live_step_of_it(cliff: float) -> None:
    """Spend is a step in m (a fixed bid that clears the competition or not): no multiplier
    spends the budget, and the search settles across the cliff, within the live bound's factor
    (exp(gain x ERROR_CLIP) = 1.28 at the defaults) of it."""
    m, _, _ = _rounds(lambda m: np.where(m > cliff, 400.0, 0.0), [100.0])
    factor = np.exp(PacingConfig().gain * ERROR_CLIP)
    assert cliff / factor <= m[0] <= cliff * factor


def test_the_opening_is_logged_and_leaves_the_live_draws_alone(tmp_path: Path) -> None:
    """With the forecast, an `opening` row per advertiser with its multiplier inside the
    controller's bounds; the live requests are the same as with every campaign at its ceiling
    (the forecast draws on its own stream and ids), and that world writes no opening."""
    run_tiny(tmp_path / "forecast")
    run_tiny(tmp_path / "ceiling", "pacing.opening=ceiling")
    op = read_log(tmp_path / "forecast", "opening")
    cfg = PacingConfig()
    assert op.height == op["advertiser_id"].n_unique() == 12
    assert op["requests"].min() > 0 and (op["rounds"] == cfg.opening_rounds).all()
    thr = op.filter(pl.col("objective") == "cpm")
    bid = op.filter(pl.col("objective") != "cpm")
    assert thr["multiplier"].is_between(cfg.min_participation, 1.0).all()
    assert bid["multiplier"].is_between(cfg.min_multiplier, cfg.max_multiplier).all()
    assert (op["multiplier"] < 1.0).any(), "the tiny world's budgets bind: some start lower"
    assert read_log(tmp_path / "ceiling", "opening").height == 0
    cols = ["request_id", "time", "user_id", "surface"]
    a = read_log(tmp_path / "forecast", "requests").filter(pl.col("day") == 0).select(cols)
    b = read_log(tmp_path / "ceiling", "requests").filter(pl.col("day") == 0).select(cols)
    assert a.equals(b)
    # the live controller starts from the opening: one bounded step from it at the first update
    # (cpc: a bid multiplier without the autobidder's part), from the ceiling without a forecast
    step = np.exp(cfg.gain * ERROR_CLIP) * (1 + 1e-9)
    for world, start in (("forecast", op.select("advertiser_id", start="multiplier")),
                         ("ceiling", op.select("advertiser_id", start=pl.lit(cfg.max_multiplier)))):
        first = (read_log(tmp_path / world, "pacing").filter(pl.col("time") == pl.col("time").min())
                 .join(start, on="advertiser_id").join(op.select("advertiser_id", "objective"),
                                                       on="advertiser_id")
                 .filter(pl.col("objective") == "cpc"))
        assert first.height > 0
        ratio = first["multiplier"] / first["start"]
        assert ratio.is_between(1 / step, step).all(), (world, ratio.to_list())
