"""The command line: ``python -m sim`` runs a scenario and prints ``run_dir: PATH`` last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

from sim.report.__main__ import main as report_main

from conftest import TINY, read_json


def test_cli_runs_and_prints_run_dir_last(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sim", "scenario=default", *TINY,
                          f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"run_dir: {tmp_path}"
    assert read_json(tmp_path / "manifest.json")["status"] == "complete"
    assert read_json(tmp_path / "manifest.json")["scenario"] == "default"
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["arms"]["control"]["spend"] > 0
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_sigterm_records_failed_with_the_signal(tmp_path: Path) -> None:
    """A scheduler's or Ray's preemption (SIGTERM) leaves a manifest that says ``failed``."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "sim", "scenario=default", *TINY, "days=5",
                             f"hydra.run.dir={tmp_path}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "manifest.json"
    deadline = time.monotonic() + 120
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # inside the run (start-up training or the simulation)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    m = read_json(manifest)
    assert m["status"] == "failed"
    assert "SIGTERM" in m["error"]


def test_cli_sweep_runs_each_job(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "sim", "-m", "seed=0,1", *TINY, "days=0.05",
                          f"hydra.sweep.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for job in ("0", "1"):
        assert read_json(tmp_path / job / "manifest.json")["status"] == "complete"
    seeds = {read_json(tmp_path / j / "manifest.json")["seed"] for j in ("0", "1")}
    assert seeds == {0, 1}
    # python -m sim.report on the multirun directory gathers the jobs
    assert report_main([str(tmp_path), "--metric", "arms.control.spend"]) == 0
    frame = pl.read_parquet(tmp_path / "sweep.parquet")
    assert frame["override.seed"].to_list() == [0, 1]
    assert frame["arms.control.spend"].to_list() == [
        read_json(tmp_path / j / "metrics.json")["arms"]["control"]["spend"] for j in ("0", "1")]
    assert (tmp_path / "sweep.md").exists()
