"""How many threads a run's torch and faiss kernels get: a number, or ``auto``.

``auto`` resolves per job to the cores the job may use, so parallel jobs do not fight over them:

* in a Ray task, the CPUs Ray assigned to it (``hydra.launcher.ray.remote.num_cpus``, 1 by
  default);
* in a Hydra sweep on the joblib launcher, ``max(1, cores // n_jobs)`` (``n_jobs`` -1: one job per
  core, so 1 thread each);
* otherwise (a single run, a test, a notebook) every core this process may use.

An explicit number always wins. The threads a run really used are in ``manifest.threads``.

**Results do not depend on the thread count** at 1 and 2 threads (tested on whole worlds of both
L1 families): faiss's exact search and numpy are thread-count independent; torch's matrix products
are under MKL's strict reproducibility mode, which importing ``sim`` requests (``MKL_CBWR``, see
:mod:`sim`); the one torch kernel found to sum per thread in training, LayerNorm's backward, is
replaced in ``dhen`` (:class:`sim.models.dhen.AffineLayerNorm`); and MKL's kernels for products of
4 to 16 rows into 16 or 17 outputs (the towers' last layers on a small batch) give other bits on 2
threads even in its strict mode, so model work on fewer than :data:`FEW_ROWS` rows runs on one
thread (:func:`few_rows_on_one_thread`; it is that little work). What still differs: at 4 threads
``dhen``'s training (one weight gradient's product, by a few ulps; ``simple`` is identical), and
across machines whose CPUs take different MKL code paths (AVX2 against AVX-512). ``blas`` in the
manifest is the MKL mode a run had; a run whose process used MKL before importing ``sim`` has
MKL's default (``BRANCH_OFF``) and its results may depend on the thread count.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sim.config.schema import Config


@dataclass(frozen=True, kw_only=True)
class Threads:
    torch: int
    faiss: int
    blas: str = ""  # the MKL reproducibility mode in effect (see blas_mode)


# MKL's conditional numerical reproducibility modes (mkl_cbwr.h)
_CBWR_STRICT = 0x10000
_CBWR_BRANCHES = {1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSE4_1", 7: "SSE4_2",
                  8: "AVX", 9: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1",
                  14: "AVX512_E1"}


def blas_mode() -> str:
    """The MKL reproducibility mode of this process, as ``MKL_CBWR`` spells it (``AUTO,STRICT``),
    or ``unknown`` when torch's library does not expose MKL's query. Asking initialises MKL, which
    then keeps the mode for the life of the process."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        mode = int(lib.mkl_serv_cbwr_get(ctypes.c_int(-1)))
    except (OSError, AttributeError):
        return "unknown"
    name = _CBWR_BRANCHES.get(mode & ~_CBWR_STRICT, hex(mode & ~_CBWR_STRICT))
    return f"{name},STRICT" if mode & _CBWR_STRICT else name


FEW_ROWS = 64  # model work on fewer rows runs on one thread (see the module docstring)


@contextmanager
def few_rows_on_one_thread(rows: int) -> Iterator[None]:
    """Run the block's torch work on one thread if it is on fewer than :data:`FEW_ROWS` rows."""
    if rows >= FEW_ROWS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_cores() -> int:
    """The cores this job may use (see the module docstring)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # inside a Ray task or actor
            return max(1, int(cpus))
    n_jobs = _joblib_jobs()
    cores = machine_cores()
    if n_jobs is not None:
        return max(1, cores // (cores if n_jobs < 0 else max(n_jobs, 1)))
    return cores


def _joblib_jobs() -> int | None:
    """``hydra.launcher.n_jobs`` when this process runs a job of a Hydra sweep on joblib."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or "n_jobs" not in hc.launcher:
        return None
    return int(hc.launcher.n_jobs)


def resolve(cfg: Config, cores: int | None = None) -> Threads:
    """The threads of ``cfg``'s run, ``auto`` resolved against ``cores`` (default: this job's)."""
    available = job_cores() if cores is None else cores
    return Threads(torch=_count(cfg.threads.torch, available),
                   faiss=_count(cfg.threads.faiss, available), blas=blas_mode())


def _count(setting: str, available: int) -> int:
    return available if setting == "auto" else int(setting)
