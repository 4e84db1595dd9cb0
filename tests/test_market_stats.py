"""A marketplace's statistics: by hand on a tiny run's logs, and what the direct knobs set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sim.market_stats import hourly_shares, read_logs, statistics
from sim.world.delay import ConversionDelay

from conftest import read_log, run_tiny


def test_statistics_by_hand(tiny_run: Path) -> None:
    logs = read_logs(tiny_run)
    s = statistics(logs)
    imp, conv = logs["impressions"], logs["conversions"]
    att = conv.filter(pl.col("attributed"))
    assert s["ctr"] == imp["click"].sum() / imp.height
    assert s["cvr"] == att.height / imp["click"].sum()
    assert s["conversions_per_impr"] == pytest.approx(s["ctr"] * s["cvr"])
    delay = (att["time"] - att["click_time"]).to_numpy()
    assert s["delay_within_1h"] == np.mean(delay <= 3600)
    top = imp.filter(pl.col("position") == 0)["click"].mean()
    assert s["position_ctr_1"] == pytest.approx(imp.filter(pl.col("position") == 1)["click"].mean() / top)
    assert s["hour_share_0"] is None  # a quarter of a day has no whole day
    assert 0.0 <= s["budget_exhausted"] <= 1.0  # type: ignore[operator]


def test_hourly_shares_over_whole_days_only() -> None:
    t = np.concatenate([np.full(3, 0.5 * 3600), np.full(1, 5.5 * 3600), np.full(7, 86_400 + 100)])
    shares = hourly_shares(pl.DataFrame({"time": t}))
    assert shares is not None and shares[0] == 0.75 and shares[5] == 0.25  # the second day's
    # requests are not a whole day: left out
    assert hourly_shares(pl.DataFrame({"time": np.array([10.0, 20.0])})) is None


def test_the_direct_knobs_come_back_in_the_statistics(tmp_path: Path) -> None:
    """A day with hourly shares, a heavy-tailed delay and budgets tied to targets: the logs give
    back what the knobs set (within the noise of a small world: the delay shares within four
    binomial standard deviations of the attributed conversions' count, at least 0.03). Pacing is
    off and conversions common, so the count (at least 1,000) does not hang on how sixty oCPM
    campaigns with tight budgets pace their first day."""
    hourly = np.array([2, 1, 1, 1, 1, 1.5, 3, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 8, 9, 10, 9, 6, 3.5])
    hourly = hourly / hourly.sum()
    mix = ["world.conversion_delay=lognormal", "world.conversion_delay_weights=[0.4,0.6]",
           "world.conversion_delay_medians_s=[900,432000]", "world.conversion_delay_sigmas=[1.2,1.5]",
           "world.attribution_window_s=2592000"]
    run_tiny(tmp_path, "days=1", "traffic.hourly_shares=[" + ",".join(repr(float(x)) for x in hourly)
             + "]", *mix, "world.n_advertisers=60", "world.objective_mix={ocpm:1.0,cpc:0.0,cpm:0.0}",
             "world.budget_target_corr=-0.9", "pacing.enabled=false",
             "world.base_cvr_logit=-1.0")
    s = statistics(read_logs(tmp_path))
    got = np.array([s[f"hour_share_{h}"] for h in range(24)])
    assert np.abs(got - hourly).max() < 0.012  # 16,000 requests: about 0.002 of noise per hour
    d = ConversionDelay(kind="lognormal", weights=(0.4, 0.6), medians_s=(900.0, 432_000.0),
                        sigmas=(1.2, 1.5))
    window = float(d.cdf(2_592_000.0))  # the shares are of attributed conversions: F(t) / F(W)
    n = read_log(tmp_path, "conversions").filter(pl.col("attributed")).height
    assert n >= 1000
    for key, t in (("delay_within_1h", 3600.0), ("delay_within_24h", 86_400.0)):
        p = float(d.cdf(t)) / window
        assert s[key] == pytest.approx(p, abs=max(0.03, 4 * np.sqrt(p * (1 - p) / n))), (key, n)
    assert s["delay_within_30d"] == 1.0
    assert s["budget_target_corr"] == pytest.approx(-0.9, abs=0.1)


def test_every_statistic_is_known(tiny_run: Path) -> None:
    from sim.market_stats import KNOWN
    assert set(statistics(read_logs(tiny_run))) == set(KNOWN)


def _spread(*args: str) -> dict[str, float | None]:
    """``examples/markets/spread.py`` in its own process (it replaces the streams' methods)."""
    import json
    import subprocess
    import sys

    from conftest import TINY
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "examples/markets/spread.py"), *args,
                          "--scenario", "default", *TINY],
                         capture_output=True, text=True, check=True, cwd=root)
    row: dict[str, float | None] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def test_the_spread_script_varies_only_its_group(tmp_path: Path) -> None:
    """At its base seed the script's world is the plain run's; a group at another seed changes
    the world."""
    run_tiny(tmp_path / "plain", "seed=7")
    plain = statistics(read_logs(tmp_path / "plain"))
    same = _spread("users", "7", "--base", "7")
    assert {k: same[k] for k in plain} == plain
    # the budgets and targets are the advertisers' draws: another with the marketplace, held
    # with the run
    other = _spread("market", "8", "--base", "7")
    assert other["budget_target_corr"] != plain["budget_target_corr"]
    run = _spread("run", "8", "--base", "7")
    assert run["budget_target_corr"] == plain["budget_target_corr"]
    assert run["ctr"] != plain["ctr"]
    # the exploration log's labels alone: another start-up model, the same marketplace
    labels = _spread("exploration_labels", "8", "--base", "7")
    assert labels["budget_target_corr"] == plain["budget_target_corr"]
    assert labels["ctr"] != plain["ctr"] and labels["ctr"] != run["ctr"]


def test_the_spread_script_keeps_a_pinned_marketplace(tmp_path: Path) -> None:
    """In a pinned marketplace the script leaves the marketplace's streams at its seed: at the
    base seed its world is the plain run's; ``live`` varies the run after start-up only (the
    start-up log as the plain run's), ``startup`` the start-up log; the marketplace's own groups
    are refused."""
    import json
    import subprocess
    import sys

    run_tiny(tmp_path / "plain", "seed=7", "world.market_seed=3")
    plain = statistics(read_logs(tmp_path / "plain"))
    warmup = json.loads((tmp_path / "plain" / "metrics.json").read_text())["warmup"]
    same = _spread("models", "7", "--base", "7", "world.market_seed=3")
    assert {k: same[k] for k in plain} == plain and same["warmup"] == warmup
    live = _spread("live", "8", "--base", "7", "world.market_seed=3")
    assert live["budget_target_corr"] == plain["budget_target_corr"]
    assert live["warmup"] == warmup and live["ctr"] != plain["ctr"]
    startup = _spread("startup", "8", "--base", "7", "world.market_seed=3")
    assert startup["budget_target_corr"] == plain["budget_target_corr"]
    assert startup["warmup"] != warmup
    root = Path(__file__).resolve().parent.parent
    refused = subprocess.run([sys.executable, str(root / "examples/markets/spread.py"), "users",
                              "8", "--base", "7", "--scenario", "default",
                              "world.market_seed=3"], capture_output=True, text=True, cwd=root)
    assert refused.returncode == 2 and "marketplace is pinned" in refused.stderr
    # under a pinned start-up, `live` keeps it: the start-up log's counts as the plain run's
    run_tiny(tmp_path / "pinned", "seed=7", "world.market_seed=3", "training.startup_seed=2")
    pinned = json.loads((tmp_path / "pinned" / "metrics.json").read_text())["warmup"]
    live = _spread("live", "8", "--base", "7", "world.market_seed=3", "training.startup_seed=2")
    assert live["warmup"] == pinned != warmup
    for group in ("startup", "models", "exploration_labels"):  # a pinned start-up: not varied
        refused = subprocess.run([sys.executable, str(root / "examples/markets/spread.py"), group,
                                  "8", "--base", "7", "--scenario", "default", "world.market_seed=3",
                                  "training.startup_seed=2"], capture_output=True, text=True,
                                 cwd=root)
        assert refused.returncode == 2 and "start-up is pinned" in refused.stderr


def _concentration_module():  # examples/ is not a package: load the script by path
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "examples/markets/concentration.py"
    spec = importlib.util.spec_from_file_location("concentration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_concentration_shares_by_hand() -> None:
    shares = _concentration_module().shares
    w = pl.DataFrame({"advertiser_id": [1, 2, 1, 3, 2, 4, 5, 6],
                      "x": [0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02]})
    # by advertiser: 0.5, 0.3, 0.1, 0.05, 0.03, 0.02
    s = shares(w, "x")
    assert s["top1"] == 0.5 and s["top5"] == 0.98
    assert s["effective"] == round(1 / (0.25 + 0.09 + 0.01 + 0.0025 + 0.0009 + 0.0004), 1)
    one = shares(pl.DataFrame({"advertiser_id": [7, 7], "x": [0.1, 0.2]}), "x")
    assert one == {"top1": 1.0, "top5": 1.0, "effective": 1.0}


def test_concentration_of_a_tiny_run(tiny_run: Path) -> None:
    c = _concentration_module().concentration(tiny_run)
    logs = tiny_run / "logs"
    clicks = pl.read_parquet(logs / "clicks.parquet")
    conv = pl.read_parquet(logs / "conversions.parquet").filter(pl.col("attributed"))
    days = pl.read_parquet(logs / "budget_days.parquet")
    assert c["expected_conversions"] == round(float(clicks["true_pcvr"].sum()), 1)
    assert c["attributed_conversions"] == conv.height > 0
    # the top advertiser by counting, row by row
    counts: dict[int, int] = {}
    for adv in conv["advertiser_id"].to_list():
        counts[adv] = counts.get(adv, 0) + 1
    top1 = c["attributed"]["top1"]  # type: ignore[index]
    assert top1 == round(max(counts.values()) / conv.height, 3)
    n = len(counts)
    assert 1.0 <= c["attributed"]["effective"] <= n  # type: ignore[index,operator]
    budgeted = [r for r in days.iter_rows(named=True) if r["budget"] > 0]
    for objective in {r["objective"] for r in budgeted}:  # advertiser-days with a budget
        rows = [r for r in budgeted if r["objective"] == objective]
        spent = sum(r["spend"] > 0 for r in rows) / len(rows)
        assert c["advertiser_days_spending"][objective] == round(spent, 3)  # type: ignore[index]
        used = float(np.median([r["spend"] / r["budget"] for r in rows]))
        assert c["median_budget_used"][objective] == round(used, 3)  # type: ignore[index]


def test_the_churn_watch_leaves_the_world_alone(tmp_path: Path) -> None:
    """The churn-watch script's world is the plain run's, and what it reports happened: a refreshed
    slot's ad is still the slot's, a replaced one's successor is a new id."""
    import json
    import subprocess
    import sys

    from conftest import TINY
    run_tiny(tmp_path / "plain", "seed=7", "world.feature_refresh_per_day=20")
    plain = statistics(read_logs(tmp_path / "plain"))
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "examples/markets/churn_watch.py"), "3", "7",
                          *TINY, "world.feature_refresh_per_day=20", "--scenario", "default"],
                         capture_output=True, text=True, check=True, cwd=root)
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert rows[-1] == {"ctr": plain["ctr"], "cvr": plain["cvr"]}
    events = rows[:-1]
    assert any(e["event"] == "refresh" for e in events)  # 83% of the ads an hour
    ad = 3  # an initial ad's id is its slot
    for e in events:
        assert e["ad_id"] == ad and 0 < e["time"] <= 0.25 * 86_400
        if e["event"] == "refresh":
            assert e["change"] > 0
        else:
            assert e["new_ad_id"] > ad
            ad = e["new_ad_id"]


def test_the_market_scripts_refuse_bad_input_before_running(tmp_path: Path) -> None:
    """A slot outside the catalogue (a negative one would index another slot), an unknown key, a
    directory that is not a run: exit 2 naming what is wrong, before any world is built."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    markets = root / "examples/markets"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=root)

    from conftest import TINY
    for slot in ("-1", "96"):  # the tiny world's 12 advertisers x 8 ads: slots 0-95
        out = run(str(markets / "churn_watch.py"), slot, "7", *TINY, "--scenario", "default")
        assert out.returncode == 2 and f"SLOT {slot}: the catalogue has slots 0-95" in out.stderr
    for script, group in (("churn_watch.py", "3"), ("spread.py", "live")):
        out = run(str(markets / script), group, "7", "world.n_userz=5", "--scenario", "default")
        assert out.returncode == 2 and "world.n_userz" in out.stderr
    out = run(str(markets / "concentration.py"), str(tmp_path))
    assert out.returncode == 2 and "is not a finished run directory" in out.stderr
