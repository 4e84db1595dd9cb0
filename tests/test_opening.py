"""The market's opening: the first day's multipliers from the desk's controller run on a
forecast (closed forms on synthetic forecasts), and in tiny worlds."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sim.clock import DAY_S
from sim.config.schema import PacingConfig
from sim.logs.schema import SCHEMAS
from sim.logs.writer import LogWriter
from sim.opening import Forecast, controller_rounds, open_market
from sim.pacing import ERROR_CLIP
from sim.world.catalog import OCPM

from conftest import read_log, run_tiny, tiny_config

CFG = PacingConfig()
TWO_ARMS = ("experiment.arms=[control,treatment]",)
PER_INTERVAL = CFG.interval_s / DAY_S


def _rounds(spend_per_day, budget, start=1.0, auctions=1000.0,  # type: ignore[no-untyped-def]
            rounds=CFG.opening_rounds):
    """The controller's rounds on ``spend_per_day(m)``, every advertiser seen in ``auctions``."""
    budget = np.asarray(budget, dtype=float)
    seen = np.broadcast_to(np.asarray(auctions, dtype=float), budget.shape)
    return controller_rounds(
        np.broadcast_to(np.asarray(start, dtype=float), budget.shape).copy(),
        lambda m: Forecast(spend=spend_per_day(m) * PER_INTERVAL, auctions=seen), budget, CFG,
        rounds, CFG.max_multiplier, CFG.min_multiplier, ERROR_CLIP)


def test_the_forecast_reaches_the_closed_form_optimum_of_a_stationary_market() -> None:
    """Value 1 per auction, one competing bid ~ U[0, 1], second price: at multiplier m an
    auction costs m^2 / 2 in expectation, so a budget of b per auction is spent at m = sqrt(2b);
    two advertisers, b = 1/8 and 1/32: m = 0.5 and 0.25, from the ceiling in 16 rounds, where
    the last round's forecast spends the budget."""
    n = 10_000  # auctions a day
    budget = np.array([n / 8, n / 32])
    m, _, seen = _rounds(lambda m: n * m**2 / 2, budget)
    np.testing.assert_allclose(m, [0.5, 0.25], rtol=0.02)
    np.testing.assert_allclose(seen.spend / PER_INTERVAL, budget, rtol=0.05)


def test_an_advertiser_that_cannot_spend_its_budget_climbs_to_its_ceiling() -> None:
    m, _, _ = _rounds(lambda m: 50.0 * m, [100.0], start=0.2)
    assert m[0] == CFG.max_multiplier


def test_an_advertiser_without_a_budget_keeps_its_start_while_others_move() -> None:
    m, _, _ = _rounds(lambda m: 400.0 * m, [0.0, 100.0], start=0.7)
    assert m[0] == 0.7 and m[1] < 0.5


def test_a_few_sampled_auctions_move_the_multiplier_less() -> None:
    """The same overspend seen in 3 sampled auctions and in 300: the first is a noisy estimate
    and its step is sqrt(3 / auctions_ref) of the full one (sim.pacing.step_weight)."""
    spend = lambda m: 400.0 * m  # noqa: E731
    few, _, _ = _rounds(spend, [100.0], auctions=3.0, rounds=1)
    many, _, _ = _rounds(spend, [100.0], auctions=300.0, rounds=1)
    assert np.log(many[0]) < np.log(few[0]) < 0
    assert np.log(few[0]) == pytest.approx(np.sqrt(3.0 / CFG.auctions_ref) * np.log(many[0]))


@pytest.mark.parametrize("cliff", [0.05, 0.3, 0.8])
def test_a_bidder_on_a_cliff_ends_within_one_live_step_of_it(cliff: float) -> None:
    """Spend is a step in m (a fixed bid that clears the competition or not): no multiplier
    spends the budget, and the search settles across the cliff, within the live bound's factor
    (exp(gain x ERROR_CLIP) = 1.28 at the defaults) of it."""
    m, _, _ = _rounds(lambda m: np.where(m > cliff, 400.0, 0.0), [100.0])
    factor = np.exp(CFG.gain * ERROR_CLIP)
    assert cliff / factor <= m[0] <= cliff * factor


def _state(sim) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Everything of a built world's serving state the forecast could touch, but the
    multipliers it sets."""
    out: dict[str, object] = {}
    for b in sim.desk.budgets:
        out[f"{b.name}.ledger"] = copy.deepcopy(vars(b.ledger))
        out[f"{b.name}.budgets"] = {k: copy.deepcopy(v) for k, v in vars(b).items()
                                    if k not in ("multiplier", "ledger")}
    for arm in sim.arms:
        out[f"{arm.name}.cache"] = (arm.query_cache.vectors.copy(), arm.query_cache.valid.copy())
    out["offsite"] = copy.deepcopy(vars(sim.market.offsite))
    out["next_request_id"] = sim.next_request_id
    return out


def _equal(a: object, b: object) -> bool:
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and _equal(vars(a), vars(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    return bool(a == b)


def _open(tmp_path: Path, *overrides: str):  # type: ignore[no-untyped-def]
    """A built tiny world, its state before, and its openings (by set of budgets)."""
    from sim.simulation import Simulation

    cfg = tiny_config(*overrides)
    sim = Simulation.from_config(cfg, LogWriter(tmp_path, 10_000))
    before = _state(sim)
    start = {b.name: b.multiplier.copy() for b in sim.desk.budgets}
    out = open_market(sim.desk, sim.arms, sim.market, cfg, sim.world.streams.get("opening"))
    return sim, before, start, {o.name: o for o in out}


DESIGNS = {
    "one_arm": (),
    "budget_split": (*TWO_ARMS, "experiment.ramp=[{day:0,share:0.5}]"),
    "user_split": (*TWO_ARMS, "experiment.design=user_split", "experiment.ramp=[{day:0,share:0.5}]"),
    "user_split_from_0": (*TWO_ARMS, "experiment.design=user_split",
                          "experiment.ramp=[{day:0,share:0},{day:0.1,share:0.5}]"),
}


def test_the_forecast_changes_nothing_but_the_multipliers_and_an_a_a_opens_as_one_arm(
        tmp_path: Path) -> None:
    """On built tiny worlds (one arm; A/A budget-split at 50%; A/A user-split at 50%, and from
    0%): ledgers, the desk's other state, the arms' query caches, the offsite counters and the
    request ids are exactly as before. Each arm serves the whole sample and is weighted by its
    traffic share against its (sub-)budget, so every A/A set of budgets opens exactly as the one
    arm does: budget-split arms alike, the shared budgets alike whether the treatment has half
    the traffic or none yet."""
    openings = {}
    for name, design in DESIGNS.items():
        sim, before, start, opened = _open(tmp_path / name, *design)
        assert _equal(_state(sim), before), name
        for o in opened.values():
            assert o.requests > 0
            b = next(b for b in sim.desk.budgets if b.name == o.name)
            assert np.array_equal(b.multiplier, o.multiplier)
            assert not np.array_equal(o.multiplier, start[o.name]), "the tiny budgets bind"
        openings[name] = opened
    one = openings["one_arm"]["control"].multiplier
    for name, opened in openings.items():
        for o in opened.values():
            np.testing.assert_allclose(o.multiplier, one, rtol=1e-9, err_msg=f"{name} {o.name}")


def test_an_autobid_campaign_opens_within_the_autobidders_lead(tmp_path: Path) -> None:
    """With the oCPM autobidder on (its cap 1.5, its CPA multiplier 1 at the start) an oCPM
    campaign's opening stays within LEAD of the CPA multiplier, as every live step keeps it;
    and the autobidder's book is untouched."""
    from sim.autobidding import LEAD

    sim, before, _, opened = _open(tmp_path, "bidding.autobid.enabled=true")
    assert _equal(_state(sim), before)
    o = opened["control"]
    b = sim.desk.budgets[0]
    ocpm = sim.market.advertisers.objective == OCPM
    assert ocpm.any() and b.conversions is not None
    assert (o.multiplier[ocpm] <= LEAD * b.cpa_multiplier[ocpm] + 1e-12).all()
    assert (o.multiplier[~ocpm] <= CFG.max_multiplier).all()


@pytest.mark.parametrize("step_day", [0.125, 1.0])
def test_a_budget_split_arm_a_ramp_holds_at_0_opens_when_the_step_funds_it(
        tmp_path: Path, step_day: float) -> None:
    """A ramp that holds the treatment at 0 until a step inside a day or at a day's start: at
    time 0 only the control opens (the treatment has no budget, and keeps its ceiling); at the
    first traffic after the step the treatment opens on a forecast of the rest of its day,
    against its sub-budget then as the campaigns log has it (inside a day: its share of what the
    control left; at a day's start: its share of the budget, after the day's reset), and the
    live controller's first update after it is one bounded step from the opening."""
    t = step_day * DAY_S
    run_tiny(tmp_path, *TWO_ARMS, "pacing.opening=forecast",
             f"experiment.ramp=[{{day:0,share:0}},{{day:{step_day},share:0.5}}]",
             f"days={step_day + 0.125}")
    op = read_log(tmp_path, "opening")
    assert sorted(op.group_by("arm", "time").len().select("arm", "time").rows()) == [
        ("control", 0.0), ("treatment", t)]
    treat = op.filter(pl.col("arm") == "treatment").sort("advertiser_id")
    camp = (read_log(tmp_path, "campaigns").filter((pl.col("arm") == "treatment")
                                                   & (pl.col("time") == t))
            .sort("advertiser_id"))
    np.testing.assert_allclose(treat["budget"].to_numpy(), camp["budget"].to_numpy(), rtol=1e-12)
    assert treat["budget"].sum() > 0
    bid = treat.filter(pl.col("objective") != "cpm")
    assert (bid["multiplier"] < CFG.max_multiplier / np.exp(CFG.gain * ERROR_CLIP)).any()
    first = (read_log(tmp_path, "pacing").filter((pl.col("arm") == "treatment")
                                                 & (pl.col("time") > t))
             .filter(pl.col("time") == pl.col("time").min())
             .join(bid.select("advertiser_id", start="multiplier"), on="advertiser_id"))
    step = np.exp(CFG.gain * ERROR_CLIP) * (1 + 1e-9)
    assert first.height == bid.height
    assert (first["multiplier"] / first["start"]).is_between(1 / step, step).all()
    # the control's time-0 forecast served a sample (the ids are checked with the stub market)
    assert op.filter(pl.col("arm") == "control")["requests"][0] > 0


def test_the_opening_is_logged_and_the_live_run_starts_from_it(tmp_path: Path) -> None:
    """With the forecast, an `opening` row per advertiser inside the controller's bounds, and
    the live controller's first update one bounded step from it (oCPM and CPC: bid multipliers,
    the autobidder off); with every campaign at its ceiling, no opening rows and the first
    update one step from the ceiling. The live requests are the same in both worlds."""
    run_tiny(tmp_path / "forecast", "pacing.opening=forecast")
    run_tiny(tmp_path / "ceiling")  # the default
    op = read_log(tmp_path / "forecast", "opening")
    assert op.schema == pl.Schema(SCHEMAS["opening"])
    assert op.height == op["advertiser_id"].n_unique() == 12
    assert op["requests"].min() > 0 and (op["rounds"] == CFG.opening_rounds).all()
    thr = op.filter(pl.col("objective") == "cpm")
    bid = op.filter(pl.col("objective") != "cpm")
    assert thr["multiplier"].is_between(CFG.min_participation, 1.0).all()
    assert bid["multiplier"].is_between(CFG.min_multiplier, CFG.max_multiplier).all()
    assert read_log(tmp_path / "ceiling", "opening").height == 0
    cols = ["request_id", "time", "user_id", "surface"]
    a = read_log(tmp_path / "forecast", "requests").filter(pl.col("day") == 0).select(cols)
    b = read_log(tmp_path / "ceiling", "requests").filter(pl.col("day") == 0).select(cols)
    assert a.equals(b)
    step = np.exp(CFG.gain * ERROR_CLIP) * (1 + 1e-9)
    low = op.filter((pl.col("objective") != "cpm") & (pl.col("multiplier") < 1 / step))
    assert low.height > 0, "some campaign opens more than a step below its ceiling"
    for world, start in (("forecast", op.select("arm", "advertiser_id", start="multiplier")),
                         ("ceiling", op.select("arm", "advertiser_id",
                                               start=pl.lit(CFG.max_multiplier)))):
        first = (read_log(tmp_path / world, "pacing").filter(pl.col("time") == pl.col("time").min())
                 .join(start, on=["arm", "advertiser_id"])
                 .join(op.select("arm", "advertiser_id", "objective"), on=["arm", "advertiser_id"])
                 .filter(pl.col("objective") != "cpm"))
        assert first.height == op.filter(pl.col("objective") != "cpm").height
        ratio = first["multiplier"] / first["start"]
        assert ratio.is_between(1 / step, step).all(), (world, ratio.to_list())


@pytest.mark.parametrize("at", [0.0, 0.3, 0.8])
def test_a_forecast_of_the_rest_of_the_day_reaches_its_closed_form(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    """A stub market where every sampled request brings each advertiser of the opened arm one
    auction and one impression costing ``k_a x m_a``: over the rest of the day from ``now`` the
    forecast's spend is ``w x R x k x m`` (``w`` the arm's traffic share, ``R`` the rest of the
    day's expected requests: ``requests_per_day x (1 - day_share(now))`` on the default curve),
    so the controller's fixed point is ``m* = left / (w x R x k)``, ``left`` what remains of the
    budget. Fails if the rest's share, its seconds or the plan's day are mixed up (each off by a
    factor 1 / (1 - day_share) or 86,400 / rest seconds). The sample's requests fall in [now, the
    day's end) with ids from the id given."""
    import types

    import sim.opening as opening
    from sim.simulation import Simulation
    from sim.world.traffic import day_share

    cfg = tiny_config(*TWO_ARMS, "experiment.ramp=[{day:0,share:0},{day:0.3,share:0.5}]",
                      "days=1", "pacing.opening_rounds=400")
    sim = Simulation.from_config(cfg, LogWriter(tmp_path, 10_000))
    now = at * DAY_S
    if at > 0:
        sim.desk.resplit(0.5, now)
    name = "treatment" if at > 0 else "control"
    b = sim.desk.by_arm[name]
    n = sim.desk.adv.n
    w = sim.desk.traffic_shares()[name]
    rest_requests = cfg.traffic.requests_per_day * (1.0 - day_share(now, cfg.traffic))
    left = b.ledger.budget - b.ledger.spent_today
    k = left / (w * rest_requests) * np.linspace(0.5, 20.0, n)  # fixed points 2 ... 0.05
    seen: list[np.ndarray] = []

    def serve(arm, market, acfg, seed, batch, eligible, load, work):  # type: ignore[no-untyped-def]
        seen.append(batch.time.copy())
        seen.append(batch.request_id.copy())
        adv = np.tile(np.arange(n), len(batch))
        cost = np.tile(k * arm.budgets.multiplier, len(batch))
        return types.SimpleNamespace(impressions=types.SimpleNamespace(advertiser=adv), cost=cost,
                                     auctioned=types.SimpleNamespace(entrants=lambda: adv))

    monkeypatch.setattr(opening, "serve", serve)
    monkeypatch.setattr(opening, "forecast_cost", lambda served: served.cost)
    first_id = opening.OPENING_ID_BASE + 12_345
    [o] = opening.open_market(sim.desk, sim.arms, sim.market, cfg, np.random.default_rng(0), now,
                              [name], first_id)
    target = np.clip(left / (w * rest_requests * k), sim.desk.floor, cfg.pacing.max_multiplier)
    assert (left > 0).all() and (target < cfg.pacing.max_multiplier).sum() > n // 2
    np.testing.assert_allclose(o.multiplier, target, rtol=0.01)
    np.testing.assert_allclose(o.budget, left)
    times, ids = seen[0], seen[1]
    assert len(times) and times.min() >= now and times.max() < (np.floor(at) + 1) * DAY_S
    assert ids[0] == first_id and (np.diff(ids) == 1).all()
