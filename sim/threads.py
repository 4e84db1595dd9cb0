"""How many threads a run's torch and faiss kernels get: a number, or ``auto``.

``auto`` resolves per job to the cores the job may use, so parallel jobs do not fight over them:

* in a Ray task, the CPUs Ray assigned to it (``hydra.launcher.ray.remote.num_cpus``, 1 by
  default);
* in a Hydra sweep on the joblib launcher, ``max(1, cores // n_jobs)`` (``n_jobs`` -1: one job per
  core, so 1 thread each);
* otherwise (a single run, a test, a notebook) every core this process may use.

An explicit number always wins. The threads a run really used are in ``manifest.threads``.

**Deterministic mode** (``threads.deterministic=true``): the same bits at 1 and 2 threads, for a
whole world of either L1 family (tested), so a sweep's 1-thread jobs reproduce a 2-thread run. It
takes three things, each found by comparing 1 and 2 threads:

* MKL's strict reproducibility mode, which torch's matrix products then follow at any thread
  count. MKL reads it once, from the environment, at its first call, so on the native path the
  process must start with ``MKL_CBWR=AUTO,STRICT`` (a run in this mode without it stops before it
  starts);
* ``dhen``'s LayerNorm with its affine step written out (:class:`sim.models.dhen.AffineLayerNorm`:
  the same function; torch's fused backward sums the gradients of ``weight`` and ``bias`` per
  thread);
* model work on fewer than :data:`FEW_ROWS` rows on one thread (:func:`few_rows_on_one_thread`):
  MKL's kernels for 4 to 16 rows into 16 or 17 outputs (the towers' last layers on a small batch)
  give other bits on 2 threads even in strict mode.

faiss's exact search and numpy need nothing. What still differs in this mode: at 4 threads
``dhen``'s training (one weight gradient's product, by a few ulps; ``simple`` is identical), and
across machines whose CPUs take other MKL code paths (AVX2 against AVX-512).

**On the portable CPU path** (``ADSIM_CPU_PATH=portable``, :mod:`sim.cpu_path`) ``auto`` resolves
as on a machine of :data:`PORTABLE_CORES` (2) cores, whatever this one has: a single run gets 2
threads, each job of a 2-job joblib sweep 1 (a Ray task still gets the CPUs Ray gave it), so the
same command gives the same thread counts, and with the pinned kernels the same bits, on any
machine. An explicit count still wins. Deterministic mode does not hold on that path: with MKL on
its ``COMPATIBLE`` branch, in strict mode, the tower vectors of small batches and a whole tiny
world differ between 1 and 2 threads (``tests/thread_probe.py`` run with
``ADSIM_CPU_PATH=portable``), so a sweep's 1-thread jobs reproduce a 1-thread run, not a 2-thread
one.

On the native path it is off by default: strict mode alone changes a 2-thread world's bits, which
a world amplifies. Without it, other thread counts differ in their last bits and then by more (the
headline at seed 0 on 1 thread against 2, with the cosine learning-rate schedule: offline log_mae
−1% to +4%, CPAs +1.4% and +1.7%; with a constant learning rate, −1% to −8% and ±2%, and strict
mode moved its offline log_mae by 4-6%). ``manifest.threads``
records the counts, ``deterministic``, and ``blas``, the MKL mode the process had.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sim.config.schema import Config
from sim.config.validate import ConfigError
from sim.cpu_path import pin, settle


@dataclass(frozen=True, kw_only=True)
class Threads:
    torch: int
    faiss: int
    deterministic: bool = False
    blas: str = ""  # the MKL reproducibility mode of the process (see blas_mode)


# MKL's conditional numerical reproducibility modes (mkl_cbwr.h)
_CBWR_STRICT = 0x10000
_CBWR_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 5: "SSE3",
                  6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC",
                  12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


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


PORTABLE_CORES = 2  # on the portable CPU path, `auto` resolves as on a machine of this many cores
FEW_ROWS = 64  # in deterministic mode, model work on fewer rows runs on one thread
_deterministic = False  # the mode of this process's run (set by apply); thread counts are per process


def deterministic() -> bool:
    """Whether this process's run is in deterministic mode."""
    return _deterministic


@contextmanager
def few_rows_on_one_thread(rows: int) -> Iterator[None]:
    """In deterministic mode, run the block's torch work on one thread if it is on fewer than
    :data:`FEW_ROWS` rows."""
    if not _deterministic or rows >= FEW_ROWS:
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


def job_cores(machine: int | None = None) -> int:
    """The cores this job may use (see the module docstring), on a machine of ``machine`` cores
    (default: this one's)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # inside a Ray task or actor
            return max(1, int(cpus))
    n_jobs = _joblib_jobs()
    cores = machine_cores() if machine is None else machine
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
    """The threads of ``cfg``'s run, ``auto`` resolved against ``cores`` (default: this job's).

    Raises :class:`ConfigError` for deterministic mode in a process without MKL's strict mode."""
    portable = pin().path == "portable"
    if cores is not None:
        available = cores
    else:
        available = job_cores(PORTABLE_CORES if portable else None)
    deterministic = cfg.threads.deterministic
    blas = blas_mode()
    if deterministic and not blas.endswith(",STRICT"):
        raise ConfigError(
            "`threads.deterministic=true` needs MKL's strict mode: start the process with "
            f"MKL_CBWR=AUTO,STRICT in the environment (this one has {blas})")
    return Threads(torch=_count(cfg.threads.torch, available),
                   faiss=_count(cfg.threads.faiss, available),
                   deterministic=deterministic, blas=blas)


def apply(threads: Threads) -> None:
    """Set this process's torch and faiss thread counts and deterministic mode, and hold faiss's
    kernels to the pinned CPU code path (:func:`sim.cpu_path.settle`)."""
    global _deterministic
    settle()
    torch.set_num_threads(threads.torch)
    faiss.omp_set_num_threads(threads.faiss)
    _deterministic = threads.deterministic


def _count(setting: str, available: int) -> int:
    return available if setting == "auto" else int(setting)
