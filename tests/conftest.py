"""Shared fixtures: a tiny world that runs in a few seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sim.config import load_config
from sim.config.schema import Config
from sim.run import run


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``-m lessons`` runs full-size worlds, each on every core: one at a time, in this process
    (no xdist workers), as two 2-thread worlds side by side run several times slower."""
    marks = config.option.markexpr or ""
    if "lessons" in marks and "not lessons" not in marks:
        config.option.numprocesses = 0
        config.option.dist = "no"


TINY = [
    "days=0.25",
    "world.n_users=400",
    "world.n_advertisers=12",
    "world.ads_per_advertiser=8",
    "world.daily_budget_mean=60",
    "traffic.requests_per_day=16000",
    "traffic.tick_s=600",
    "pacing.interval_s=1200",
    "funnel.k_retrieval=40",
    "funnel.k_l1=16",
    "funnel.k_l2=6",
    "funnel.ctr_prior_contexts=8",
    "training.exploration_requests=2000",
    "training.epochs=2",
    "training.batch_size=1024",
    "threads.torch=1",
    "threads.faiss=1",
    "releases.interval_s=7200",
    "releases.label_wait_s=1800",
    "releases.train_window_s=7200",
    "releases.query_rollout_delay_s=1200",
    "evaluation.rows=3000",
    "index.enrich_interval_s=1200",
    "index.snapshot_interval_s=3600",
    "index.fresh_build_interval_s=3600",
    "index.large_build_interval_s=10800",
    "index.large_deploy_s=7200",
    "logs.full_request_rate=0.05",
    "logs.partial_request_rate=0.1",
    "progress=off",
]


def tiny_config(*overrides: str) -> Config:
    return load_config("default", [*TINY, *overrides])


def tiny_kwargs() -> dict[str, Any]:
    """The tiny world's overrides as keyword arguments (dotted keys, values parsed as Hydra would)."""
    cfg = load_config("default", list(TINY))
    out: dict[str, Any] = {}
    for item in TINY:
        key = item.split("=", 1)[0]
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = node
    return out


def run_tiny(run_dir: Path, *overrides: str) -> dict[str, Any]:
    return run(tiny_config(*overrides), run_dir, scenario="default")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run shared by the tests that only read its outputs."""
    d = tmp_path_factory.mktemp("tiny")
    run_tiny(d)
    return d


def read_log(run_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "logs" / f"{table}.parquet")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
