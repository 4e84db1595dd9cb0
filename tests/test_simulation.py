"""Whole-world properties: exact control-plane traces, determinism, common random numbers,
budget eligibility, failure recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_lessons import keys_of, lookup

import sim.run as run_module
from sim.config import load_config
from sim.config.store import SCENARIO_DIR

from conftest import TINY, read_json, read_log, run_tiny, tiny_config


def test_control_plane_trace(tmp_path: Path) -> None:
    # budgets that never bind: the trace is of the control plane, not of the economy
    run_tiny(tmp_path, "days=1.25", "pacing.interval_s=10800", "world.daily_budget_mean=1e5",
             "releases.interval_s=43200",
             "releases.query_rollout_delay_s=3600", "releases.label_wait_s=3600",
             "releases.train_window_s=36000", "index.snapshot_interval_s=21600",
             "index.enrich_interval_s=3600", "index.fresh_build_interval_s=21600",
             "index.large_build_interval_s=43200", "index.large_deploy_s=21600")
    snaps = read_log(tmp_path, "snapshots")
    assert snaps["time"].to_list() == [0.0, 21600.0, 43200.0, 64800.0, 86400.0]
    builds = read_log(tmp_path, "index_builds")
    trace = list(zip(builds["tier"], builds["time"], builds["deploy_time"], builds["snapshot_time"],
                     strict=True))
    assert trace == [
        ("large", 0.0, 0.0, 0.0), ("fresh", 0.0, 0.0, 0.0),
        ("fresh", 21600.0, 21600.0, 21600.0), ("fresh", 43200.0, 43200.0, 43200.0),
        ("large", 43200.0, 64800.0, 43200.0), ("fresh", 64800.0, 64800.0, 64800.0),
        ("fresh", 86400.0, 86400.0, 86400.0),
    ]  # the large build of 86400 would deploy at the horizon (108000): it never serves
    releases = read_log(tmp_path, "model_releases")
    assert list(zip(releases["time"], releases["lineage"], releases["version"], strict=True)) == [
        (0.0, "control/l2", 1), (0.0, "control/l1", 1),
        (43200.0, "control/l2", 2), (43200.0, "control/l1", 2),
        (86400.0, "control/l2", 3), (86400.0, "control/l1", 3)]
    assert releases.filter(pl.col("version") == 2)["window_end"].to_list() == [39600.0] * 2
    rollouts = read_log(tmp_path, "rollouts")
    assert list(zip(rollouts["time"], rollouts["side"], rollouts["version"], strict=True)) == [
        (43200.0, "item", 2), (46800.0, "query", 2), (86400.0, "item", 3), (90000.0, "query", 3)]
    pacing = read_log(tmp_path, "pacing").group_by("time", maintain_order=True).agg(
        pl.col("day").first())
    times = [10800.0 * k for k in range(1, 10)]  # the horizon (1.25 d = 108000 s) runs nothing
    assert pacing["time"].to_list() == times
    assert pacing["day"].to_list() == [0] * 8 + [1]  # the update at 86400 closes day 0
    days = read_log(tmp_path, "budget_days")
    assert days["day"].unique().sort().to_list() == [0, 1]
    # the reset at midnight: day 1's spend starts from zero
    spend = read_log(tmp_path, "spend").filter(pl.col("day") == 1).sort("time")
    first = spend.group_by("advertiser_id").agg(pl.all().first())
    np.testing.assert_allclose(first["spent_today"], first["tick_spend"])

    # Requests see exactly what is deployed at their time: the query version switches at the
    # rollouts, and the large tier serves version-1 vectors until its second build deploys.
    imps = read_log(tmp_path, "impressions")
    span = (pl.col("time") >= 46800.0).cast(pl.Int8) + (pl.col("time") >= 90000.0).cast(pl.Int8)
    qv = imps.group_by(span.alias("span")).agg(pl.col("query_version").unique()).sort("span")
    assert [sorted(v) for v in qv["query_version"].to_list()] == [[1], [2], [3]]
    large = imps.filter(pl.col("tier") == "large")
    assert large.filter(pl.col("time") < 64800.0)["item_version"].unique().to_list() == [1]
    second = builds.filter((pl.col("tier") == "large") & (pl.col("time") == 43200.0))
    late = large.filter(pl.col("time") >= 64800.0)["item_version"]
    assert late.min() >= second["min_version"][0] and late.max() <= second["max_version"][0]
    # enrichment at 86400 (after release 3) embeds changed and new ads with version 3
    last_fresh = builds.filter((pl.col("tier") == "fresh") & (pl.col("time") == 86400.0))
    assert last_fresh["max_version"].to_list() == [3]
    # what L1 scored from the fresh tier (the sampled candidates: winners or not) before then
    cands = read_log(tmp_path, "candidates")
    early_fresh = cands.filter((pl.col("tier") == "fresh") & (pl.col("time") < 86400.0))
    assert early_fresh.height > 0 and early_fresh["item_version"].max() <= 2


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    run_tiny(tmp_path / "a")
    run_tiny(tmp_path / "b")
    run_tiny(tmp_path / "c", "seed=1")
    a, b, c = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "abc")
    assert a == b
    assert a != c
    assert read_log(tmp_path / "a", "impressions").equals(read_log(tmp_path / "b", "impressions"))


def test_market_seed_pins_the_marketplace_not_the_run(tmp_path: Path) -> None:
    """``world.market_seed`` draws the marketplace (budgets, targets, the response to each user
    and ad) as the run at that seed does; the run's seed still draws the traffic and outcomes."""
    run_tiny(tmp_path / "market", "seed=5")
    run_tiny(tmp_path / "a", "seed=1", "world.market_seed=5")
    run_tiny(tmp_path / "b", "seed=2", "world.market_seed=5")
    run_tiny(tmp_path / "own", "seed=1")
    run_tiny(tmp_path / "itself", "seed=5", "world.market_seed=5")
    assert read_log(tmp_path / "itself", "impressions").equals(
        read_log(tmp_path / "market", "impressions"))  # a seed's own marketplace: the plain run

    def budgets(name: str) -> pl.DataFrame:
        return (read_log(tmp_path / name, "campaigns").filter(pl.col("time") == 0)
                .select("advertiser_id", "objective", "budget", "target_cpa"))

    assert budgets("a").equals(budgets("market")) and budgets("b").equals(budgets("market"))
    assert read_json(tmp_path / "a" / "manifest.json")["market_seed"] == 5  # said where it is pinned
    assert not budgets("own").equals(budgets("market"))
    key = ["user_id", "ad_id", "surface"]

    def truth(name: str) -> pl.DataFrame:  # the initial catalogue's ads (ids 0 … 12 x 8 - 1):
        # the ads that replace expired ones are drawn by the run's churn stream
        return (read_log(tmp_path / name, "impressions").filter(pl.col("ad_id") < 12 * 8)
                .select(*key, "true_pcvr").unique(key))

    both = truth("a").join(truth("market"), on=key, suffix="_m")
    assert both.height > 50
    assert (both["true_pcvr"] == both["true_pcvr_m"]).all()
    ra, rb = (read_log(tmp_path / x, "requests") for x in "ab")
    assert not ra.select("time", "user_id").equals(rb.select("time", "user_id"))
    # the arrival times are the run seed's; who arrives, the marketplace's users
    own = read_log(tmp_path / "own", "requests")
    assert ra["time"].equals(own["time"]) and not ra["user_id"].equals(own["user_id"])


def test_startup_seed_pins_the_start_up_not_the_run(tmp_path: Path) -> None:
    """In one marketplace, ``training.startup_seed`` draws the exploration log and the start-up
    models as the run at that seed does, whatever the run's seed; the run's seed still draws the
    live run; set to the run's own seed it is the plain run."""
    market = "world.market_seed=3", "training.exploration_negative_rate=0.5"  # the keep draw too
    run_tiny(tmp_path / "own5", "seed=5", *market)
    run_tiny(tmp_path / "a", "seed=1", *market, "training.startup_seed=5")
    run_tiny(tmp_path / "b", "seed=2", *market, "training.startup_seed=5")
    run_tiny(tmp_path / "own1", "seed=1", *market)
    run_tiny(tmp_path / "itself", "seed=1", *market, "training.startup_seed=1")
    metrics = {x: read_json(tmp_path / x / "metrics.json") for x in ("own5", "a", "b", "own1", "itself")}
    assert metrics["itself"] == metrics["own1"]  # its own seed: the plain run
    assert metrics["a"]["warmup"] == metrics["b"]["warmup"] == metrics["own5"]["warmup"]
    assert metrics["a"]["warmup"] != metrics["own1"]["warmup"]  # another start-up log
    assert read_json(tmp_path / "a" / "manifest.json")["startup_seed"] == 5

    def first(name: str) -> pl.DataFrame:  # the start-up models, as trained
        return (read_log(tmp_path / name, "model_releases").filter(pl.col("version") == 1)
                .drop("time").sort("lineage"))

    assert first("a").equals(first("own5")) and first("b").equals(first("own5"))
    assert not first("own1").equals(first("own5"))
    ra, rb, r1 = (read_log(tmp_path / x, "requests") for x in ("a", "b", "own1"))
    assert not ra.select("time", "user_id").equals(rb.select("time", "user_id"))
    assert ra.select("time", "user_id").equals(r1.select("time", "user_id"))  # the run's traffic
    assert metrics["a"] != metrics["own1"]  # served by seed 5's models


def test_common_random_numbers_across_worlds(tmp_path: Path) -> None:
    run_tiny(tmp_path / "gsp")
    run_tiny(tmp_path / "fp", "auction=first_price")
    key = ["request_id", "ad_id", "position"]
    a = read_log(tmp_path / "gsp", "impressions").select(*key, "click", "conversion", "true_pctr")
    b = read_log(tmp_path / "fp", "impressions").select(*key, "click", "conversion", "true_pctr")
    both = a.join(b, on=key, suffix="_fp")
    assert both.height > 100
    assert (both["click"] == both["click_fp"]).all()
    assert (both["conversion"] == both["conversion_fp"]).all()
    assert (both["true_pctr"] == both["true_pctr_fp"]).all()


def test_capped_advertisers_stop_winning(tiny_run: Path) -> None:
    cfg = tiny_config()
    spend = read_log(tiny_run, "spend")
    capped = (spend.filter(pl.col("spent_today") >= pl.col("budget"))
              .group_by("advertiser_id", "day").agg(pl.col("time").min().alias("capped_at")))
    assert capped.height > 0
    late = (read_log(tiny_run, "impressions").join(capped, on=["advertiser_id", "day"])
            .filter(pl.col("time") >= pl.col("capped_at") + cfg.traffic.tick_s))
    assert late.height == 0


def test_impressions_are_distinct_ads_per_request(tiny_run: Path) -> None:
    imps = read_log(tiny_run, "impressions")
    assert imps.select("request_id", "ad_id").is_unique().all()
    assert imps.select("request_id", "position").is_unique().all()
    reqs = read_log(tiny_run, "requests")
    assert reqs["n_impressions"].sum() == imps.height


def test_metrics_are_finite_and_consistent(tiny_run: Path) -> None:
    m = read_json(tiny_run / "metrics.json")
    arm = m["arms"]["control"]
    for key in ("cpa_all", "spend", "conversions", "clicks", "impressions", "revenue",
                "ocpm_impression_share", "l1_calibration", "l1_logloss", "l1_log_mae",
                "l2_calibration"):
        assert arm[key] is not None and np.isfinite(arm[key]), key
    # CPA (oCPM) is defined exactly when an oCPM conversion happened (the tiny world may have none)
    if arm["ocpm_conversions"]:
        assert arm["cpa"] == pytest.approx(arm["ocpm_spend"] / arm["ocpm_conversions"])
    else:
        assert arm["cpa"] is None
    assert arm["revenue"] <= arm["spend"] + 1e-9
    assert sum(d["impressions"] for d in arm["daily"]) == arm["impressions"]
    assert m["requests"] == read_log(tiny_run, "requests").height
    convs = read_log(tiny_run, "conversions")
    assert arm["conversions"] == convs["attributed"].sum()
    assert (convs["time"] >= convs["click_time"]).all()


def test_failed_run_says_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("index deployer exploded")

    monkeypatch.setattr(run_module.Simulation, "run", boom)
    with pytest.raises(RuntimeError):
        run_tiny(tmp_path)
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["status"] == "failed"
    assert "index deployer exploded" in manifest["error"]
    assert not (tmp_path / "metrics.json").exists()
    assert not list((tmp_path / "logs").glob("*.parquet"))


def test_complete_manifest(tiny_run: Path) -> None:
    man = read_json(tiny_run / "manifest.json")
    assert man["status"] == "complete"
    for key in ("seed", "config_hash", "packages", "sim_start_s", "sim_end_s", "wall_s",
                "wall_start", "wall_end", "scenario", "market_seed"):
        assert key in man
    assert man["market_seed"] is None  # the tiny world draws its marketplace from its seed
    assert man["packages"]["torch"] is not None
    parts = [man[k] for k in ("setup_s", "opening_s", "releases_s", "data_plane_s", "evaluation_s")]
    assert man["releases_s"] > 0 and all(p >= 0 for p in parts)  # the tiny world releases twice
    assert sum(parts) <= man["wall_s"]  # the parts do not overlap


@pytest.mark.parametrize("scenario", sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
def test_every_scenario_runs_on_a_tiny_horizon(scenario: str, tmp_path: Path) -> None:
    # a tiny horizon ends before a ramp's second step: no exposure twin to run (its config
    # would be refused, and tests/test_experiment.py runs one on a tiny ramp)
    twin = load_config(scenario).experiment.exposure_twin
    cfg = load_config(scenario, [*TINY, *(["experiment.exposure_twin=false"] if twin else [])])
    metrics = run_module.run(cfg, tmp_path, scenario=scenario)
    assert metrics["arms"]["control"]["impressions"] > 0
    assert read_json(tmp_path / "manifest.json")["status"] == "complete"
    for key in keys_of(scenario):  # every figure a lesson states is a key this scenario reports
        lookup(metrics, key, undefined_ok=True)  # (a tiny world may leave a lift undefined)
