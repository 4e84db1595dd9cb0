"""The benchmark runs end to end on a small shape and reports every figure it promises."""

from __future__ import annotations

import pytest

from sim import bench


def test_bench_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    out = bench.main(["--ads", "2000", "--batch", "128", "--batches", "2", "--reps", "1",
                      "--batch1-requests", "8", "--scale-ads", "2000", "--skip-default",
                      "--skip-headline", "--threads", "1"])
    for key in ("requests_per_s", "kernel_floor_requests_per_s", "batch1_requests_per_s",
                "peak_rss_mb"):
        assert out[key] > 0, key
    assert out["ratio"] == pytest.approx(out["requests_per_s"] / out["kernel_floor_requests_per_s"])
    assert set(out["scaling"]["requests"]) == {"1x", "4x"} and set(out["scaling"]["ads"]) == {"2000"}
    assert "default_scenario_s" not in out and "headline_s" not in out
    assert out["retrieval_recall_vs_exact"] == 1.0  # the default Flat index is exact
    assert '"requests_per_s"' in capsys.readouterr().out  # one JSON object on stdout


def test_bench_measures_an_approximate_index_against_the_exact_one() -> None:
    small = ["--ads", "2000", "--batch", "128", "--batches", "1", "--reps", "1",
             "--batch1-requests", "2", "--scale-ads", "", "--skip-default", "--skip-headline",
             "--threads", "1",
             "--factory", "IVF16,Flat"]
    every_list = bench.main([*small, "--nprobe", "16"])  # all 16 lists searched: exact again
    assert every_list["retrieval_recall_vs_exact"] == pytest.approx(1.0)
    assert every_list["shape"]["factory"] == "IVF16,Flat"
    one_list = bench.main([*small, "--nprobe", "1"])
    assert 0.0 < one_list["retrieval_recall_vs_exact"] < 0.9


def test_bench_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        bench.parse(["--ads", "100"])
    with pytest.raises(SystemExit):
        bench.parse(["--reps", "0"])
