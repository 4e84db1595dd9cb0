"""The command line: ``python -m sim`` runs a scenario and prints ``run_dir: PATH`` last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
