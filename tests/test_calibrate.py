"""Direct fits of ``sim.calibrate``: statistics made at known knob values come back, the knobs
the statistics cannot identify are held and said so, and bad targets stop with their name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim import calibrate as C
from sim import direct_fit as D
from sim.market_stats import DELAY_SHARES
from sim.world.delay import ConversionDelay


def _shares(weight: float, slow: float, fast: float, names: list[str],
            window: float = D.WINDOW_S) -> dict[str, float]:
    """What ``sim.market_stats`` measures of this mixture: attributed shares F(t) / F(W)."""
    d = ConversionDelay(kind="lognormal", weights=(1 - weight, weight), medians_s=(fast, slow),
                        sigmas=(D.FAST_SIGMA, D.SLOW_SIGMA))
    return {n: float(d.cdf(DELAY_SHARES[n]) / d.cdf(window)) for n in names}


THREE = ["delay_within_1h", "delay_within_24h", "delay_within_7d"]


@pytest.mark.parametrize(("weight", "slow", "fast"), [(0.6, 5 * 86_400.0, 900.0),
                                                       (0.3, 2 * 86_400.0, 300.0),
                                                       (0.8, 12 * 86_400.0, 3_000.0)])
def test_the_delay_mixture_is_recovered_from_three_shares(weight: float, slow: float,
                                                          fast: float) -> None:
    """The 30-day share is 1 under a 30-day window (not read); the other three pin all three
    knobs."""
    fit = D.fit_delay(_shares(weight, slow, fast, list(DELAY_SHARES)))
    assert fit.read == tuple(THREE) and fit.reached
    assert fit.fitted["slow_weight"] == pytest.approx(weight, rel=0.01)
    assert fit.fitted["slow_median_s"] == pytest.approx(slow, rel=0.02)
    assert fit.fitted["fast_median_s"] == pytest.approx(fast, rel=0.02)
    assert fit.held == {}
    w = fit.overlay["world"]
    assert w["conversion_delay"] == "lognormal" and sum(w["conversion_delay_weights"]) == pytest.approx(1)
    assert w["attribution_window_s"] == D.WINDOW_S


def test_two_shares_fit_two_knobs_and_hold_the_fast_median() -> None:
    """Criteo's published shape (Chapelle 2014: about 35% within an hour, half within a day)."""
    fit = D.fit_delay({"delay_within_1h": 0.35, "delay_within_24h": 0.50})
    assert set(fit.fitted) == {"slow_weight", "slow_median_s"}
    assert fit.held == {"fast_median_s": D.FAST_MEDIAN_S} and fit.reached
    assert fit.reproduced["delay_within_1h"] == pytest.approx(0.35, abs=0.005)
    assert fit.reproduced["delay_within_24h"] == pytest.approx(0.50, abs=0.005)
    # without the 1-hour share the fast median is not pinned, whatever the number of shares
    made = _shares(0.6, 5 * 86_400.0, 900.0, ["delay_within_24h", "delay_within_7d"])
    assert D.fit_delay(made).held == {"fast_median_s": D.FAST_MEDIAN_S}


def test_a_fit_that_cannot_reach_its_targets_says_so() -> None:
    far = D.fit_delay({"delay_within_1h": 0.9, "delay_within_24h": 0.95})
    assert not far.reached
    # a fast market whose first share is near 1: the start is kept inside the bounds
    fast = D.fit_delay({"delay_within_24h": 0.995, "delay_within_7d": 0.9999})
    assert set(fast.reproduced) == {"delay_within_24h", "delay_within_7d"}


def test_hourly_shares_and_the_correlation_are_read_directly() -> None:
    raw = np.arange(1, 25, dtype=float)
    fit = D.fit_hourly({f"hour_share_{h}": 2 * x for h, x in enumerate(raw)})
    np.testing.assert_allclose(fit.overlay["traffic"]["hourly_shares"], raw / raw.sum(), atol=1e-8)
    assert D.fit_corr(-0.97).overlay == {"world": {"budget_target_corr": -0.97}}
    fits = D.fit_direct({"budget_target_corr": -0.5, "delay_within_1h": 0.2,
                         "delay_within_24h": 0.6, "ctr": 0.04})
    merged = D.merged_overlay(fits)
    assert merged["world"]["budget_target_corr"] == -0.5
    assert merged["world"]["conversion_delay"] == "lognormal"


def test_bad_targets_stop_with_their_name() -> None:
    with pytest.raises(ValueError, match="at least two"):
        D.fit_delay({"delay_within_1h": 0.3})
    with pytest.raises(ValueError, match="under the attribution window"):
        D.fit_delay({"delay_within_1h": 0.3, "delay_within_30d": 0.9}, window_s=86_400.0)
    with pytest.raises(ValueError, match="grow with the delay"):
        D.fit_delay({"delay_within_1h": 0.6, "delay_within_24h": 0.5})
    with pytest.raises(ValueError, match="missing hours"):
        D.fit_hourly({"hour_share_0": 1.0})
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        D.fit_corr(1.5)
    with pytest.raises(ValueError, match="`ctr`"):
        D.target_values({"ctr": "high"})
    with pytest.raises(ValueError, match="`cvr`"):
        D.target_values({"cvr": {"value": 0.005, "sd": -1}})
    assert D.target_values({"ctr": 0.04, "cvr": {"value": 0.005, "sd": 0.001}}) == {
        "ctr": 0.04, "cvr": 0.005}


def test_the_command_writes_an_overlay_a_world_accepts(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """End to end on a targets file: the overlay composes into a valid config whose delay and
    traffic are the fitted ones; unknown statistics stop before anything is written."""
    import json

    import yaml

    from conftest import tiny_config
    targets = {"statistics": {"delay_within_1h": 0.35, "delay_within_24h": {"value": 0.5, "sd": 0.02},
                              "budget_target_corr": -0.9, "ctr": 0.04,
                              **{f"hour_share_{h}": 1 / 24 for h in range(24)}}}
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(targets))
    assert C.main([str(path), "--out", str(tmp_path / "fit"), "--trials", "0",
                   "--check-seeds", ""]) == 0
    overlay = yaml.safe_load((tmp_path / "fit" / "calibrated.yaml").read_text())
    w, t = overlay["world"], overlay["traffic"]
    cfg = tiny_config(*(f"world.{k}={json.dumps(v)}" for k, v in w.items()),
                      f"traffic.hourly_shares={json.dumps(t['hourly_shares'])}")
    assert cfg.world.conversion_delay == "lognormal" and cfg.world.budget_target_corr == -0.9
    md = (tmp_path / "fit" / "fit.md").read_text()
    assert "Not fitted" in md and "`ctr`" in md and "Held" in md and "Fidelity" not in md
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"statistics": {"clicks_per_view": 0.1}}))
    with pytest.raises(SystemExit):
        C.main([str(bad), "--out", str(tmp_path / "bad")])
    assert "unknown statistics ['clicks_per_view']" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
