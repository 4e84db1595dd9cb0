"""The benchmark runs end to end on a small shape and reports every figure it promises."""

from __future__ import annotations

import pytest

from sim import bench


def test_bench_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    out = bench.main(["--ads", "2000", "--batch", "128", "--batches", "2", "--reps", "1",
                      "--batch1-requests", "8", "--scale-ads", "2000", "--skip-default",
                      "--threads", "1"])
    for key in ("requests_per_s", "kernel_floor_requests_per_s", "batch1_requests_per_s",
                "peak_rss_mb"):
        assert out[key] > 0, key
    assert out["ratio"] == pytest.approx(out["requests_per_s"] / out["kernel_floor_requests_per_s"])
    assert set(out["scaling"]["requests"]) == {"1x", "4x"} and set(out["scaling"]["ads"]) == {"2000"}
    assert "default_scenario_s" not in out
    assert '"requests_per_s"' in capsys.readouterr().out  # one JSON object on stdout


def test_bench_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        bench.parse(["--ads", "100"])
    with pytest.raises(SystemExit):
        bench.parse(["--reps", "0"])
