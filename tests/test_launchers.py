"""Sweeps on Hydra launchers: joblib (local processes, the default for ``-m``) and Ray (a local
instance here; a cluster by naming its address)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

from sim.report.__main__ import main as report_main
from sim.threads import machine_cores

from conftest import TINY, read_json


def _sweep(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", "-m", "seed=0,1", *TINY, "days=0.05",
                           f"hydra.sweep.dir={tmp_path}", *extra],
                          capture_output=True, text=True, timeout=600)


def _jobs_complete(tmp_path: Path, threads: int) -> None:
    for job, seed in (("0", 0), ("1", 1)):
        manifest = read_json(tmp_path / job / "manifest.json")
        assert manifest["status"] == "complete" and manifest["seed"] == seed
        assert manifest["threads"] == {"torch": threads, "faiss": threads, "blas": "AUTO,STRICT"}
        assert read_json(tmp_path / job / "metrics.json")["requests"] > 0


def _launcher(tmp_path: Path) -> str:
    return str(yaml.safe_load((tmp_path / "multirun.yaml").read_text())["hydra"]["launcher"]["_target_"])


def test_joblib_is_the_default_sweep_launcher(tmp_path: Path) -> None:
    """``python -m sim -m`` runs each job on joblib; ``python -m sim.report`` gathers them."""
    out = _sweep(tmp_path, "hydra.launcher.n_jobs=2", "threads.torch=auto", "threads.faiss=auto")
    assert out.returncode == 0, out.stderr
    assert _launcher(tmp_path).endswith("JoblibLauncher")
    _jobs_complete(tmp_path, threads=max(1, machine_cores() // 2))  # two jobs share the cores
    assert report_main([str(tmp_path), "--metric", "arms.control.spend"]) == 0
    frame = pl.read_parquet(tmp_path / "sweep.parquet")
    assert frame["override.seed"].to_list() == [0, 1]
    assert frame["arms.control.spend"].to_list() == [
        read_json(tmp_path / j / "metrics.json")["arms"]["control"]["spend"] for j in ("0", "1")]
    assert (tmp_path / "sweep.md").exists()


def test_ray_sweep_on_a_local_instance(tmp_path: Path) -> None:
    # address null starts a local Ray instance; a cluster is named the same way:
    # hydra.launcher.ray.init.address=ray://HEAD:10001
    out = _sweep(tmp_path, "hydra/launcher=ray", "hydra.launcher.ray.init.address=null",
                 "+hydra.launcher.ray.init.num_cpus=2",
                 "+hydra.launcher.ray.init.include_dashboard=false", "threads.torch=auto",
                 "threads.faiss=auto")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _launcher(tmp_path).endswith("RayLauncher")
    _jobs_complete(tmp_path, threads=1)  # a Ray task asks for 1 CPU by default
