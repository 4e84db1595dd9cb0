"""Deterministic mode (``threads.deterministic``, ``sim.threads``): the same bits at 1 and 2 threads,
for each piece that needed a fix and for a whole world. The comparisons run in a process started
with MKL's strict mode (``thread_probe.py``); each piece failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import sim.threads
from sim.config import ConfigError
from sim.models.dhen import AffineLayerNorm

from conftest import tiny_config

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(TESTS / "thread_probe.py")], capture_output=True,
                         text=True, timeout=600, cwd=TESTS.parent,
                         env={**os.environ, "MKL_CBWR": "AUTO,STRICT", "ADSIM_CPU_PATH": "native",
                              "PYTHONPATH": str(TESTS.parent)})
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_probe_ran_in_mkl_strict_mode(probe: dict[str, Any]) -> None:
    assert probe["blas"] == "AUTO,STRICT"


def test_training_gives_the_same_bits_at_one_two_and_four_threads(probe: dict[str, Any]) -> None:
    assert probe["simple_2"] and probe["simple_4"] and probe["dhen_2"]
    # without the mode, dhen's fused LayerNorm backward differs at 2 threads: the check can fail
    assert not probe["dhen_2_not_deterministic"]


def test_tower_vectors_of_small_batches_are_the_same(probe: dict[str, Any]) -> None:
    assert probe["vectors_simple"] and probe["vectors_dhen"]


def test_exact_search_is_the_same_at_any_thread_count(probe: dict[str, Any]) -> None:
    assert probe["search"]


def test_a_world_gives_the_same_results_at_one_and_two_threads(probe: dict[str, Any]) -> None:
    """A tiny A/B world with a ``dhen`` treatment: ``metrics.json`` and every log table."""
    assert probe["world_differs"] == []


def test_deterministic_mode_without_mkl_strict_stops_before_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim.threads, "blas_mode", lambda: "BRANCH_OFF")
    with pytest.raises(ConfigError, match=r"threads\.deterministic.*MKL_CBWR=AUTO,STRICT.*BRANCH_OFF"):
        sim.threads.resolve(tiny_config("threads.deterministic=true"))
    assert not sim.threads.resolve(tiny_config()).deterministic  # off by default: no requirement


def test_affine_layer_norm_is_layer_norm() -> None:
    x = torch.randn(64, 5, 16, generator=torch.Generator().manual_seed(0))
    ours, torchs = AffineLayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    torchs.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), torchs(x))  # outside deterministic mode: torch's own kernel
    sim.threads.apply(sim.threads.Threads(torch=1, faiss=1, deterministic=True))
    try:
        torch.testing.assert_close(ours(x), torchs(x))
    finally:
        sim.threads.apply(sim.threads.Threads(torch=1, faiss=1))
