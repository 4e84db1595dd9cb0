"""The portable CPU code path (``sim.cpu_path``, the default): a world's bits do not depend on
the code paths the caller's machine and environment would choose. This machine stands in for two
CPUs: a process whose environment holds every library to older kernels (no AVX at all in ATen,
SSE in oneDNN, another MKL branch, OpenBLAS's Nehalem kernels, numpy without AVX2) takes other
code paths on the native path, and the same bits as an unconstrained process on the portable
one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
OLDER = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
         "MKL_CBWR": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem",
         "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}


def python(code_or_script: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in OLDER and k != "ADSIM_CPU_PATH"}
    return subprocess.run([sys.executable, *code_or_script], capture_output=True, text=True,
                          timeout=600, cwd=TESTS.parent,
                          env={**base, "PYTHONPATH": str(TESTS.parent), **env})


def world(run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    out = python([str(TESTS / "cpu_path_probe.py"), str(run_dir)], env)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("cpu_path")
    return {name: world(root / name, env) for name, env in {
        "pinned": {"ADSIM_CPU_PATH": "portable"},
        "pinned_older": {"ADSIM_CPU_PATH": "portable", **OLDER},
        "native": {"ADSIM_CPU_PATH": "native"},
        "native_older": {"ADSIM_CPU_PATH": "native", **OLDER}}.items()}


def test_the_older_environment_is_another_code_path(worlds: dict[str, dict[str, Any]]) -> None:
    """Without the pin the caller's environment changes the bits: the next test can fail."""
    assert worlds["native"]["metrics"] != worlds["native_older"]["metrics"]
    assert worlds["native_older"]["cpu_path"]["libraries"]["torch"] == "DEFAULT"
    assert worlds["native"]["cpu_path"] == {**worlds["native"]["cpu_path"], "path": "native",
                                            "complete": True, "set": {}, "replaced": {}}


def test_the_pinned_path_gives_the_same_world_whatever_the_caller_set(
        worlds: dict[str, dict[str, Any]]) -> None:
    pinned, older = worlds["pinned"], worlds["pinned_older"]
    assert (older["metrics"], older["logs"]) == (pinned["metrics"], pinned["logs"])
    for w in (pinned, older):
        assert w["cpu_path"]["complete"], w["cpu_path"]
        assert w["cpu_path"]["libraries"] == {"torch": "AVX2", "numpy": ["X86_V3"], "faiss": "AVX2"}
    assert older["cpu_path"]["replaced"] == OLDER and pinned["cpu_path"]["replaced"] == {}


def test_a_library_loaded_before_sim_is_named() -> None:
    out = python(["-c", "import numpy, json, sim, sim.cpu_path as c; print(json.dumps(c.observed()))"],
                 {"ADSIM_CPU_PATH": "portable"})
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not seen["complete"] and seen["too_late"] == ["numpy"]


def test_an_unknown_path_stops_before_anything_loads() -> None:
    out = python(["-c", "import sim"], {"ADSIM_CPU_PATH": "avx9"})
    assert out.returncode != 0
    assert "ADSIM_CPU_PATH='avx9'" in out.stderr and "['native', 'portable']" in out.stderr


def test_auto_threads_on_the_portable_path_are_those_of_a_two_core_machine() -> None:
    code = ("import json, sim, sim.threads as t; from sim.config import load_config; "
            "t.machine_cores = lambda: 8; r = t.resolve(load_config('default', [])); "
            "print(json.dumps([r.torch, r.faiss, r.blas]))")
    for path, expected in (("portable", [2, 2, "COMPATIBLE,STRICT"]),
                           ("native", [8, 8, "BRANCH_OFF"])):
        out = python(["-c", code], {"ADSIM_CPU_PATH": path})
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.strip().splitlines()[-1]) == expected, path


def test_a_checkpoint_trained_on_one_path_is_never_loaded_on_the_other() -> None:
    code = "import sim; from sim.models.checkpoints import code_digest; print(code_digest())"
    digests = {path: python(["-c", code], {"ADSIM_CPU_PATH": path}).stdout.strip()
               for path in ("portable", "native")}
    assert all(len(d) == 32 for d in digests.values()) and digests["portable"] != digests["native"]
