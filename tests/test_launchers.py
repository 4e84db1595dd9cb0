"""Sweeps on a Ray cluster of two nodes started by the test, reached by its address. (The joblib
launcher, the default for ``-m``, runs the replicates sweep of ``test_replicates.py``.)"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml

from sim.report.__main__ import main as report_main
from sim.threads import blas_mode

from conftest import TINY, read_json


def _sweep(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", "-m", "seed=0,1", *TINY, "days=0.05",
                           f"hydra.sweep.dir={tmp_path}", *extra],
                          capture_output=True, text=True, timeout=600)


def _jobs_complete(tmp_path: Path, threads: int) -> None:
    for job, seed in (("0", 0), ("1", 1)):
        manifest = read_json(tmp_path / job / "manifest.json")
        assert manifest["status"] == "complete" and manifest["seed"] == seed
        assert manifest["threads"] == {"torch": threads, "faiss": threads, "deterministic": False,
                                      "blas": blas_mode()}  # the jobs inherit this environment
        assert read_json(tmp_path / job / "metrics.json")["requests"] > 0


def _launcher(tmp_path: Path) -> str:
    return str(yaml.safe_load((tmp_path / "multirun.yaml").read_text())["hydra"]["launcher"]["_target_"])


def _ray(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``ray`` command of this environment."""
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], capture_output=True,
                          text=True, timeout=180, env=env)


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A Ray cluster of two nodes on this machine, each a separate set of processes started by
    ``ray start`` (the head, then a worker joining it by address), 1 CPU each; its address.
    Token authentication, as on a real cluster: one secret given to every node and to the driver
    (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``; the sweep inherits them from this process).
    ``ray stop`` ends it (and any other Ray processes of this user on this machine)."""
    with socket.socket() as s:  # a free port for the head's GCS
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0"}
    env = {**os.environ, **auth}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    with tempfile.TemporaryDirectory(prefix="ray") as temp:  # short: Ray's socket paths are limited
        try:
            head = _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                        "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}", env=env)
            assert head.returncode == 0, head.stdout + head.stderr
            worker = _ray("start", f"--address={address}", "--node-ip-address=127.0.0.1",
                          "--num-cpus=1", env=env)
            assert worker.returncode == 0, worker.stdout + worker.stderr
            for _ in range(60):  # the worker registers with the head after `ray start` returns
                status = _ray("status", f"--address={address}", env=env).stdout
                if status.count(" node_") == 2:
                    break
                time.sleep(1)
            assert status.count(" node_") == 2 and "0.0/2.0 CPU" in status, status
            yield address
        finally:
            _ray("stop", "--force", env=env)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_ray_sweep_on_a_cluster_of_two_nodes(tmp_path: Path, ray_cluster: str) -> None:
    """The cluster recipe of docs/running.md: a sweep sent to the cluster by address, each job a Ray task on
    one CPU (so 1 thread), its directory under the shared ``hydra.sweep.dir`` (one machine here;
    a shared file system on a real cluster), gathered by ``python -m sim.report``."""
    out = _sweep(tmp_path, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_cluster}",
                 "threads.torch=auto", "threads.faiss=auto")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _launcher(tmp_path).endswith("RayLauncher")
    _jobs_complete(tmp_path, threads=1)  # a Ray task asks for 1 CPU by default
    assert report_main([str(tmp_path), "--metric", "arms.control.spend"]) == 0
    assert pl.read_parquet(tmp_path / "sweep.parquet")["override.seed"].to_list() == [0, 1]
