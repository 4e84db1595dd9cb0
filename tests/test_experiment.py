"""Experiments: assignment under a ramp, per-arm configs, budget designs, A/A symmetry, and the
delta-method intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.campaigns import CampaignDesk
from sim.clock import DAY_S
from sim.config import ConfigError
from sim.config.overlay import arm_config
from sim.config.schema import RampStep
from sim.experiment import assignment_draw, in_treatment, treatment_share
from sim.logs.writer import LogWriter
from sim.results import to_json
from sim.simulation import Simulation
from sim.stats import Z95, Ratio, clustered_variance, concentration, lift, ratio, stratified_lift, t95
from sim.world.traffic import day_share

from conftest import read_json, read_log, run_tiny, tiny_config

TWO_ARMS = ("experiment.arms=[control,treatment]",)


@settings(max_examples=50, deadline=None)
@given(salt=st.text(min_size=1, max_size=8), s1=st.floats(0, 1), s2=st.floats(0, 1))
def test_assignment_is_stable_and_monotone_under_a_ramp(salt: str, s1: float, s2: float) -> None:
    users = np.arange(2000)
    lo, hi = sorted((s1, s2))
    a, b = in_treatment(salt, users, lo), in_treatment(salt, users, hi)
    assert not np.any(a & ~b)  # nobody goes back to control when the share grows
    assert np.array_equal(a, in_treatment(salt, users, lo))  # same draw every time


def test_assignment_share_and_salt() -> None:
    users = np.arange(100_000)
    assert in_treatment("x", users, 0.3).mean() == pytest.approx(0.3, abs=0.01)
    assert not np.array_equal(assignment_draw("x", users), assignment_draw("y", users))


def test_treatment_share_follows_the_ramp() -> None:
    ramp = [RampStep(1.0, 0.2), RampStep(3.0, 0.5), RampStep(5.0, 0.7)]
    assert [treatment_share(d * 86_400.0, ramp) for d in (0, 1, 2.9, 3, 4.5, 6)] == [
        0.0, 0.2, 0.2, 0.5, 0.5, 0.7]


def test_treatment_overlay_is_validated() -> None:
    cfg = tiny_config()
    arm = arm_config(cfg, {"models": {"l1_family": "dhen"}, "funnel": {"k_l1": 10}})
    assert arm.models.l1_family == "dhen" and arm.funnel.k_l1 == 10 and cfg.funnel.k_l1 == 16
    with pytest.raises(ConfigError, match="world"):
        arm_config(cfg, {"world": {"n_users": 5}})
    with pytest.raises(ConfigError, match="l1_famly"):
        arm_config(cfg, {"models": {"l1_famly": "dhen"}})
    with pytest.raises(ConfigError, match="funnel.k_l1"):
        arm_config(cfg, {"funnel": {"k_l1": 10_000}})


def test_budget_split_sub_budgets_sum_to_the_campaign_budget(tmp_path: Path) -> None:
    cfg = tiny_config(*TWO_ARMS, "experiment.ramp=[{day:0,share:0.2},{day:1,share:0.7}]")
    from sim.campaigns import traffic_shares
    from sim.rng import Streams
    from sim.world.marketplace import build_marketplace

    market = build_marketplace(cfg, Streams(cfg.seed))
    desk = CampaignDesk(cfg, market.advertisers, market.users, LogWriter(tmp_path, 100))
    base = market.advertisers.daily_budget
    c, t = desk.by_arm["control"].ledger, desk.by_arm["treatment"].ledger
    np.testing.assert_allclose(c.budget + t.budget, base)
    at = {s: traffic_shares(cfg.experiment.salt, market.users, s, ["control", "treatment"])
          for s in (0.2, 0.7)}
    assert at[0.2]["treatment"] != pytest.approx(0.2, abs=1e-3)  # users' activity differs
    np.testing.assert_allclose(t.budget, at[0.2]["treatment"] * base)
    c.charge(np.array([0, 1]), np.array([0.5 * base[0], 0.9 * base[1]]))  # spend, then ramp
    desk.resplit(0.7, 0.5 * DAY_S)
    np.testing.assert_allclose(c.budget + t.budget, base)
    assert c.budget[1] >= c.spent_today[1]  # never below what it has spent
    np.testing.assert_allclose(t.budget[0], at[0.7]["treatment"] * 0.5 * base[0])
    # both arms' plans are re-anchored at the step's traffic share, from their spend then
    for b in desk.by_arm.values():
        assert b.anchor_share == pytest.approx(day_share(0.5 * DAY_S, cfg.traffic))
        np.testing.assert_allclose(b.anchor_spent, b.ledger.spent_today)
    desk.close_day(0)
    np.testing.assert_allclose(t.budget, at[0.7]["treatment"] * base)
    assert all(b.anchor_share == 0.0 for b in desk.by_arm.values())
    user = CampaignDesk(tiny_config(*TWO_ARMS, "experiment.design=user_split"),
                        market.advertisers, market.users, LogWriter(tmp_path, 100))
    assert user.by_arm["control"] is user.by_arm["treatment"]
    np.testing.assert_allclose(user.by_arm["control"].ledger.budget, base)


def test_treatment_with_more_slots_than_the_control_runs_past_releases(tmp_path: Path) -> None:
    run_tiny(tmp_path, "world.position_ctr=[1.0,0.75,0.55,0.4]",
             "experiment.arms=[control,treatment]", "experiment.treatment.auction.n_slots=4",
             "experiment.treatment.auction.slot_ctr=[1.0,0.75,0.55,0.4]")
    imps = read_log(tmp_path, "impressions")
    assert imps.filter(pl.col("arm") == "treatment")["position"].max() == 3
    assert imps.filter(pl.col("arm") == "control")["position"].max() == 2
    releases = read_log(tmp_path, "model_releases")
    assert (releases["version"] > 1).any()


def test_aa_arms_start_with_identical_models(tmp_path: Path) -> None:
    sim = Simulation.from_config(tiny_config(*TWO_ARMS), LogWriter(tmp_path, 10_000))
    for kind in ("l1", "l2"):
        a = sim.world.registry.latest(f"control/{kind}").model.state_dict()
        b = sim.world.registry.latest(f"treatment/{kind}").model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("design", ["budget_split", "user_split"])
def test_two_arm_run_books_each_arm_on_its_own_budgets(tmp_path: Path, design: str) -> None:
    run_tiny(tmp_path, *TWO_ARMS, f"experiment.design={design}",
             "experiment.ramp=[{day:0,share:0.3},{day:0.125,share:0.6}]")
    reqs = read_log(tmp_path, "requests")
    # a user is in one arm per ramp step, and never moves back from treatment to control
    first_treat = reqs.filter(pl.col("arm") == "treatment").group_by("user_id").agg(
        pl.col("time").min().alias("t0"))
    back = reqs.join(first_treat, on="user_id").filter(
        (pl.col("arm") == "control") & (pl.col("time") > pl.col("t0")))
    assert back.height == 0
    days = read_log(tmp_path, "budget_days")
    names = {"budget_split": {"control", "treatment"}, "user_split": {"shared"}}[design]
    assert set(days["arm"].unique().to_list()) == names
    assert (days["overspend"] <= days["max_tick_spend"] + 1e-9).all()
    imps, spend = read_log(tmp_path, "impressions"), read_log(tmp_path, "spend")
    for arm in ("control", "treatment"):
        assert imps.filter(pl.col("arm") == arm)["cost"].sum() == pytest.approx(
            spend.filter(pl.col("arm") == arm)["tick_spend"].sum())
    if design == "budget_split":  # an arm's spend stays within its own sub-budget
        for arm in ("control", "treatment"):
            d = days.filter(pl.col("arm") == arm)
            assert (d["spend"] <= d["budget"] + d["max_tick_spend"] + 1e-9).all()
    m = read_json(tmp_path / "metrics.json")
    assert set(m["arms"]) == {"control", "treatment"}
    total_billed = float(days["billed"].sum())
    assert sum(m["arms"][a]["revenue"] for a in m["arms"]) == pytest.approx(total_billed)
    assert set(m["lift"]) >= {"cpa", "spend_per_request", "conversions_per_request"}
    # the ramp's two steps, each with its lifts and its share of each metric's denominator
    steps = m["lift_by_step"]
    assert [(st["day"], st["share"]) for st in steps] == [(0.0, 0.3), (0.125, 0.6)]
    for k in ("spend_per_request", "impressions_per_request"):
        assert sum(st["weight"][k] for st in steps) == pytest.approx(1.0)
        assert all(st["lift"][k] is not None for st in steps)
        strat = m["lift_stratified"][k]
        assert strat["low"] < strat["estimate"] < strat["high"]  # a real interval, not a point
    per_step = np.array([np.log1p(st["lift"]["spend_per_request"]["estimate"]) for st in steps])
    w = np.array([st["weight"]["spend_per_request"] for st in steps])
    assert m["lift_stratified"]["spend_per_request"]["estimate"] == pytest.approx(
        np.expm1(per_step @ w))
    ci = m["arms"]["control"]["ci"]["spend_per_request"]
    assert ci["low"] < ci["estimate"] < ci["high"]  # a real interval, not a point
    conc = m["lift_concentration"]["cpa"]  # named advertisers of the run, not users' pseudo ids
    assert conc is not None
    assert set(conc["top"]) <= set(days["advertiser_id"].to_list())
    assert 0 < conc["top1_share"] <= conc["top3_share"] <= 1 + 1e-12


def test_delta_method_intervals_cover_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    hits_ratio, hits_lift, reps = 0, 0, 400
    for _ in range(reps):
        x = rng.poisson(rng.lognormal(1.0, 1.0, size=400)) + 1.0  # requests per user
        y = rng.binomial(x.astype(int), 0.1) * rng.lognormal(0, 0.5, size=400)  # spend per user
        x2 = rng.poisson(rng.lognormal(1.0, 1.0, size=400)) + 1.0
        y2 = rng.binomial(x2.astype(int), 0.1) * rng.lognormal(0, 0.5, size=400)
        truth = 0.1 * np.exp(0.125)  # E[spend] / E[requests]
        r = ratio(y, x)  # every cell its own user
        iv = r.interval()
        hits_ratio += iv.low <= truth <= iv.high
        lf = lift(ratio(y2, x2, user=np.arange(400, 800)), r)
        hits_lift += lf.low <= 0.0 <= lf.high
    assert 0.92 <= hits_ratio / reps <= 0.98
    assert 0.92 <= hits_lift / reps <= 0.98


def _cells(rng: np.random.Generator, n: int, rate: float,
           first_user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conversions and requests of ``n`` users (one cell each) and their ids."""
    x = rng.poisson(3.0, n) + 1.0
    return rng.poisson(rate * x).astype(float), x, np.arange(first_user, first_user + n)


def _ratio(*parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Ratio:
    y, x, u = (np.concatenate(a) for a in zip(*parts, strict=True))
    r = ratio(y, x, u, u % 20)  # 20 advertisers
    assert r is not None
    return r


def test_stratified_lift_by_hand() -> None:
    rng = np.random.default_rng(0)
    a, b = _ratio(_cells(rng, 300, 0.2, 0)), _ratio(_cells(rng, 300, 0.3, 300))
    # one stratum: the pooled lift, interval and all
    assert to_json(stratified_lift([(a, b)], [5.0])) == pytest.approx(to_json(lift(a, b)))
    # two strata: the weighted mean of their log lifts
    c, d = _ratio(_cells(rng, 300, 0.4, 600)), _ratio(_cells(rng, 300, 0.1, 900))
    la, lb = np.log(a.estimate / b.estimate), np.log(c.estimate / d.estimate)
    got = stratified_lift([(a, b), (c, d)], [1.0, 3.0])
    assert got is not None and got.estimate == pytest.approx(np.expm1(0.25 * la + 0.75 * lb))
    assert got.low < got.estimate < got.high
    # a step without weight (no traffic) is left out; an undefined step with weight is not
    assert to_json(stratified_lift([(a, b), (None, d)], [1.0, 0.0])) == pytest.approx(
        to_json(lift(a, b)))
    assert stratified_lift([(a, b), (None, d)], [1.0, 1.0]) is None
    with pytest.raises(ValueError, match="2 strata and 1 weights"):
        stratified_lift([(a, b), (c, d)], [1.0])


@settings(max_examples=30, deadline=None)
@given(rates=st.lists(st.tuples(st.floats(0.05, 0.5), st.floats(0.05, 0.5)), min_size=1,
                      max_size=4),
       weights=st.lists(st.floats(0.1, 10.0), min_size=4, max_size=4),
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_stratified_lift_is_a_weighted_mean_of_the_strata(
        rates: list[tuple[float, float]], weights: list[float], scale: float, seed: int) -> None:
    # invariants, not the formula: the estimate lies within the strata's own lifts, does not
    # move when every weight is scaled, and a stratum's weight pulls the estimate towards it
    rng = np.random.default_rng(seed)
    strata = [(_ratio(_cells(rng, 200, rt, 0)), _ratio(_cells(rng, 200, rc, 200)))
              for rt, rc in rates]
    w = weights[:len(strata)]
    own = [lift(t, c).estimate for t, c in strata]  # type: ignore[union-attr]
    got = stratified_lift(strata, w)
    assert got is not None
    assert min(own) - 1e-12 <= got.estimate <= max(own) + 1e-12
    scaled = stratified_lift(strata, [x * scale for x in w])
    assert scaled is not None and scaled.estimate == pytest.approx(got.estimate)
    heavier = stratified_lift(strata, [w[0] * 10.0, *w[1:]])
    assert heavier is not None
    assert abs(heavier.estimate - own[0]) <= abs(got.estimate - own[0]) + 1e-12
    if len(strata) > 1 and max(own) - min(own) > 1e-6 and abs(got.estimate - own[0]) > 1e-6:
        assert abs(heavier.estimate - own[0]) < abs(got.estimate - own[0])  # weights matter
    assert got.low < got.estimate < got.high
    assert (scaled.low, scaled.high) == pytest.approx((got.low, got.high))


def test_stratified_lift_covers_an_aa_under_a_ramp_and_the_pooled_lift_does_not() -> None:
    # An A/A under a ramp: the treatment holds 20% of the users on day 0 and 70% on day 1, and
    # every user converts twice as often on day 1. Pooled, the treatment "converts more"; within
    # each day the arms are the same.
    rng = np.random.default_rng(1)
    covered_strat, covered_pooled, reps = 0, 0, 300
    for _ in range(reps):
        days = []
        for share, rate in ((0.2, 0.1), (0.7, 0.2)):
            n_t = int(400 * share)
            days.append((_cells(rng, n_t, rate, 0), _cells(rng, 400 - n_t, rate, 1000)))
        strat = stratified_lift([(_ratio(t), _ratio(c)) for t, c in days],
                                [float(t[1].sum() + c[1].sum()) for t, c in days])
        pooled = lift(_ratio(*(t for t, _ in days)), _ratio(*(c for _, c in days)))
        assert strat is not None and pooled is not None
        covered_strat += strat.low <= 0.0 <= strat.high
        covered_pooled += pooled.low <= 0.0 <= pooled.high
    assert 0.92 <= covered_strat / reps <= 0.98
    assert covered_pooled / reps < 0.5


def test_concentration_of_a_lift_with_one_advertiser_off_the_ratio() -> None:
    # control: five advertisers at CPA 2 (every influence 0); treatment: advertiser 3 spends twice
    # as much per conversion. R_t = 120 / 50 = 2.4; s_a = (y_a - 2.4 * 10) / 50 / 2.4: -1/30 for
    # the four others, 2/15 for advertiser 3. Its share: (2/15)^2 / ((2/15)^2 + 4/900) = 0.8.
    adv, user = np.arange(5), np.arange(5)
    x = np.full(5, 10.0)
    control = ratio(np.full(5, 20.0), x, user, adv)
    treatment = ratio(np.array([20.0, 20, 20, 40, 20]), x, user + 5, adv)
    c = concentration(treatment, control)
    assert c is not None and c.advertisers == 5 and c.top[0] == 3
    assert c.top1_share == pytest.approx(0.8)
    assert c.top3_share == pytest.approx(0.9)
    # an A/A whose every advertiser sits on the ratio has no advertiser variance to share out
    assert concentration(ratio(np.full(5, 20.0), x, user + 5, adv), control) is None
    assert concentration(ratio(np.full(5, 20.0), x), ratio(np.full(5, 20.0), x)) is None  # no ids


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 30))
def test_concentration_shares_the_lifts_advertiser_variance(seed: int, n_adv: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    arms = []
    for offset in (0, n):
        x = rng.poisson(3.0, n) + 1.0
        y = x * rng.lognormal(0.0, 0.5, n)
        arms.append((y, x, np.arange(offset, offset + n), rng.integers(0, n_adv, n)))
    t, c = (ratio(y, x, u, a) for y, x, u, a in arms)
    conc = concentration(t, c)
    assert conc is not None
    assert 1 / conc.advertisers - 1e-12 <= conc.top1_share <= conc.top3_share <= 1 + 1e-12
    # its shares are of the one-way advertiser term of the lift's variance: the top advertiser's
    # influence alone has that share of the term (the |A| / (|A| - 1) factor cancels)
    psi = np.concatenate([t.influence / t.estimate, -c.influence / c.estimate])
    adv = np.concatenate([t.advertiser, c.advertiser])
    whole = clustered_variance(psi, adv, None)  # one-way, by advertiser
    top = adv == conc.top[0]
    g = np.unique(adv).size
    assert (psi[top].sum() ** 2) * g / (g - 1) / whole == pytest.approx(conc.top1_share)
    # relabelling the advertisers moves the names, not the shares
    perm = rng.permutation(n_adv) + 1000
    t2, c2 = (ratio(y, x, u, perm[a]) for y, x, u, a in arms)
    conc2 = concentration(t2, c2)
    # (as a set: equal shares are ordered by id, and two advertisers always tie, at 0.5 each)
    assert conc2 is not None and set(conc2.top) == {int(perm[a]) for a in conc.top}
    assert (conc2.top1_share, conc2.top3_share) == pytest.approx(
        (conc.top1_share, conc.top3_share))
    assert conc2.top1_share == pytest.approx(conc.top1_share)


def test_ground_truth_worlds_of_an_aa_test_agree(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, *TWO_ARMS, "experiment.ground_truth=true")
    gt = m["ground_truth"]
    for key in ("spend", "conversions", "revenue"):  # sums: defined in any world with traffic
        assert gt["world_0"][key] > 0 and gt["effects"][key]["estimate"] is not None
    for key in ("spend", "conversions", "revenue", "cpa"):
        assert gt["world_0"][key] == gt["world_100"][key]  # the same requests, the same draws
        effect = gt["effects"][key]
        if gt["world_0"][key] is None:  # e.g. no oCPM conversion in the tiny world: no CPA
            assert effect["global_effect"] is None and effect["bias"] is None
            continue
        assert effect["global_effect"] == pytest.approx(0.0, abs=1e-12)
        if effect["estimate"] is None:  # the A/B run's arms could not define it (a tiny world)
            assert effect["bias"] is None
            continue
        assert effect["bias"] == pytest.approx(effect["estimate"] - effect["global_effect"])
    # the two worlds served every request from one arm each, and their logs agree row for row
    zero = read_log(tmp_path / "ground_truth" / "share_0", "impressions")
    full = read_log(tmp_path / "ground_truth" / "share_100", "impressions")
    assert set(zero["arm"].unique()) == {"control"} and set(full["arm"].unique()) == {"treatment"}
    assert zero.drop("arm").equals(full.drop("arm"))
    assert read_json(tmp_path / "ground_truth" / "share_0" / "manifest.json")["status"] == "complete"


def test_exposure_readout_per_ramp_step(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, *TWO_ARMS, "experiment.ramp=[{day:0,share:0.2},{day:0.125,share:0.7}]")
    steps = m["exposure"]["treatment"]
    assert [s["share"] for s in steps] == [0.2, 0.7] and [s["day"] for s in steps] == [0, 0.125]
    clicks = read_log(tmp_path, "clicks").filter(pl.col("arm") == "treatment")
    assert sum(s["clicks"] for s in steps) == clicks.height


def test_the_exposure_twin_holds_the_share_and_is_the_same_world_until_the_ramp_moves(
        tmp_path: Path) -> None:
    ramp = "experiment.ramp=[{day:0,share:0.2},{day:0.125,share:0.7}]"
    m = run_tiny(tmp_path, *TWO_ARMS, ramp, "experiment.exposure_twin=true")
    twin = m["exposure_twin"]
    assert [s["share"] for s in twin["treatment"]] == [0.2, 0.2]
    assert [s["day"] for s in twin["treatment"]] == [s["day"] for s in m["exposure"]["treatment"]]
    for arm in ("control", "treatment"):  # common random numbers: step 0 is the same world
        assert twin[arm][0] == m["exposure"][arm][0]
        assert twin[arm][1] != m["exposure"][arm][1]
    held = read_log(tmp_path / "exposure_twin", "requests")
    late = held.filter(pl.col("time") >= 0.125 * DAY_S)
    assert late.filter(pl.col("arm") == "treatment").height < 0.35 * late.height  # still ~20%
    for bad in ([], ["experiment.ramp=[{day:0,share:0.2},{day:0.5,share:0.7}]"],  # after the run
                ["experiment.ramp=[{day:0,share:0},{day:0.125,share:0.7}]"]):  # holds no treatment
        with pytest.raises(ConfigError, match="exposure_twin"):
            tiny_config(*TWO_ARMS, *bad, "experiment.exposure_twin=true")


@pytest.mark.parametrize("n_users", [3_000, 20_000])
def test_budget_split_follows_the_traffic_the_assigned_users_bring(n_users: int) -> None:
    """User activity is lognormal, so at a nominal 50% the treatment's users bring more or less
    than half of the requests. Sub-budgets split by the traffic share keep the budget per request
    the same in both arms: over 60 worlds (assignment salts) the median imbalance of a day's
    budget per realised request is within 0.5% (what is left is the day's sampling noise, about
    0.35% at 150,000 requests); split by the nominal share it is several times larger."""
    from sim.campaigns import traffic_shares
    from sim.world.traffic import draw_audience
    from sim.world.users import build_users

    cfg = tiny_config(f"world.n_users={n_users}")
    users = build_users(cfg.world, cfg.traffic, np.random.default_rng(1))
    by_traffic, by_nominal = [], []
    for k in range(60):
        salt = f"world-{k}"
        user, _ = draw_audience(np.random.default_rng(k), 150_000, users, [0.5, 0.3, 0.2])
        treated = in_treatment(salt, user, 0.5)
        n_t, n_c = int(treated.sum()), int((~treated).sum())
        shares = traffic_shares(salt, users, 0.5, ["control", "treatment"])
        by_traffic.append(abs((shares["treatment"] / n_t) / (shares["control"] / n_c) - 1))
        by_nominal.append(abs((0.5 / n_t) / (0.5 / n_c) - 1))
    assert np.median(by_traffic) <= 0.005
    assert np.median(by_nominal) > 2 * np.median(by_traffic)


def test_intervals_over_few_clusters_use_a_t_quantile() -> None:
    """Ten advertisers, each with its own conversion-rate multiplier: the interval's width comes
    from ten cluster sums, and its t quantile has at most nine degrees of freedom. The normal quantile
    under-covers there (about 88%); t brings it back toward 95% (the sandwich variance itself is
    still biased low with ten clusters, so not all the way)."""
    assert t95(29) == pytest.approx(2.0452, abs=1e-4) and t95(200) == pytest.approx(1.9719, abs=1e-4)
    assert t95(0.5) == math.inf
    rng = np.random.default_rng(0)
    g, reps, hits_t, hits_z = 10, 1000, 0, 0
    users = np.arange(600)
    for _ in range(reps):
        x = rng.poisson(3.0, users.size) + 1.0
        y = rng.poisson(0.2 * x * np.exp(rng.normal(0.0, 0.5, g)[users % g] - 0.125)).astype(float)
        r = ratio(y, x, users, users % g)
        assert r is not None and 5 <= r.dof <= g - 1 + 1e-6  # about G - 1, less where sizes differ
        iv, sd = r.interval(), math.sqrt(r.variance)
        hits_t += iv.low <= 0.2 <= iv.high
        hits_z += abs(r.estimate - 0.2) <= Z95 * sd
    assert hits_t / reps >= 0.90 and hits_t - hits_z >= 0.02 * reps, (hits_t, hits_z)


def test_degrees_of_freedom_follow_the_clusters_behind_the_variance() -> None:
    """G - 1 with G the effective number of clusters of the coarser clustering: users alone, or
    the fewer of users and advertisers; clusters of unequal size count less, and a user's
    own-advertiser cells (requests) and advertisers whose cells have no influence not at all."""
    rng = np.random.default_rng(1)
    n, g = 4000, 40
    user, adv = np.arange(n), rng.integers(0, g, n)
    x = rng.poisson(3.0, n) + 1.0
    y = rng.poisson(0.3 * x).astype(float)
    alone = ratio(y, x, user)
    assert alone is not None and n / 2 < alone.dof < n  # sizes vary a little: fewer than n
    both = ratio(y, x, user, adv)
    assert both is not None and g / 2 < both.dof <= g - 1
    skewed = rng.choice(g, n, p=np.r_[[0.5], np.full(g - 1, 0.5 / (g - 1))])  # one carries half
    lopsided = ratio(y, x, user, skewed)
    assert lopsided is not None and lopsided.dof < 5 < both.dof
    # each user's requests in a cell of its own (advertiser id g + user), the spend in the shared
    # ones: the 4,000 own ids are no advertiser clusters
    y2 = np.concatenate([rng.poisson(3.0 * x).astype(float), np.zeros(n)])
    x2 = np.concatenate([np.zeros(n), x])
    ids, own = np.concatenate([adv, g + user]), np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
    counted = ratio(y2, x2, np.concatenate([user, user]), ids, own)
    uncounted = ratio(y2, x2, np.concatenate([user, user]), ids)
    assert counted is not None and uncounted is not None
    assert counted.dof <= g - 1 < uncounted.dof and counted.variance == uncounted.variance
    # 30 of the 40 advertisers have only cells with y = x = 0: ten advertiser clusters count
    keep = adv < 10
    few = ratio(np.where(keep, y, 0.0), np.where(keep, x, 0.0), user, adv)
    assert few is not None and few.dof <= 9
