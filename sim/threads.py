"""How many threads a run's torch and faiss kernels get: a number, or ``auto``.

``auto`` resolves per job to the cores the job may use, so parallel jobs do not fight over them:

* in a Ray task, the CPUs Ray assigned to it (``hydra.launcher.ray.remote.num_cpus``, 1 by
  default);
* in a Hydra sweep on the joblib launcher, ``max(1, cores // n_jobs)`` (``n_jobs`` -1: one job per
  core, so 1 thread each);
* otherwise (a single run, a test, a notebook) every core this process may use.

An explicit number always wins. The threads a run really used are in ``manifest.threads``.
Results depend on the thread count (torch and faiss reductions differ in their last bits), so the
same config and seed give the same ``metrics.json`` at the same resolved counts.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from sim.config.schema import Config


@dataclass(frozen=True, kw_only=True)
class Threads:
    torch: int
    faiss: int


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
                   faiss=_count(cfg.threads.faiss, available))


def _count(setting: str, available: int) -> int:
    return available if setting == "auto" else int(setting)
