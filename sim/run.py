"""Running one world into a run directory: manifest, logs, metrics.

``run(cfg, run_dir, scenario)`` is what ``python -m sim`` calls after Hydra composed and
validated the config. ``manifest.json`` is written first with status ``running`` and rewritten at
the end with ``complete`` or ``failed`` (with the error); every file is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sim.config.schema import Config, RampStep
from sim.cpu_path import observed
from sim.logs.writer import LogWriter, write_json_atomic
from sim.progress import Progress
from sim.simulation import Simulation
from sim.summary import ground_truth, summarize

PACKAGES = ("adsim", "simpy", "numpy", "torch", "faiss-cpu", "scipy", "polars", "hydra-core")


def serving_setup(cfg: Config) -> dict[str, Any]:
    """An arm's serving path as configured: the index factory, nprobe and the towers' dtypes."""
    return {"index_factory": cfg.index.factory, "nprobe": cfg.index.nprobe,
            "query_dtype": cfg.serving.query_dtype, "item_dtype": cfg.serving.item_dtype}


def config_hash(cfg: Config) -> str:
    """sha256 of the config's canonical JSON (sorted keys)."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _at_share(cfg: Config, percent: float) -> Config:
    """The same world with the treatment share fixed at ``percent`` % from the start."""
    exp = dataclasses.replace(cfg.experiment, ramp=[RampStep(0.0, percent / 100.0)],
                              ground_truth=False, exposure_twin=False)
    return dataclasses.replace(cfg, experiment=exp)


def held_share(cfg: Config) -> Config:
    """The exposure twin: the same world with the ramp's steps at their days, each at the first
    step's share (so the read-out has the same steps, and the share never grows)."""
    first = cfg.experiment.ramp[0].share
    exp = dataclasses.replace(cfg.experiment, ramp=[RampStep(s.day, first) for s in cfg.experiment.ramp],
                              ground_truth=False, exposure_twin=False)
    return dataclasses.replace(cfg, experiment=exp)


class Terminated(Exception):
    """The process was asked to stop by a signal (a scheduler's or Ray's preemption)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"received {signal.Signals(signum).name}")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a run is in progress, so the run records
    ``failed`` like Ctrl-C does (the default action ends the process with no clean-up). Only the
    main thread can install signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def recorded(manifest: dict[str, Any], path: Path) -> Iterator[float]:
    """Keep ``manifest`` at ``path`` for the work in the block: written at once (its ``status``
    says ``running``), and at the end with ``wall_end`` and ``wall_s``; an exception (SIGTERM
    too, as ``Terminated: received SIGTERM``) is recorded as ``failed`` with the error and its
    traceback, then re-raised. The block sets ``status`` to ``complete`` itself. Yields the
    start (``time.perf_counter``)."""
    with _sigterm_raises():
        write_json_atomic(path, manifest)
        started = time.perf_counter()
        try:
            yield started
        except BaseException as exc:
            manifest.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()})
            raise
        finally:
            manifest["wall_end"] = _now()
            manifest["wall_s"] = time.perf_counter() - started
            write_json_atomic(path, manifest)


def run(cfg: Config, run_dir: Path, scenario: str,
        progress: Progress | None = None) -> dict[str, Any]:
    """Simulate ``cfg`` into ``run_dir``; return the metrics. Re-raises after recording a failure
    (also on SIGTERM, recorded as ``Terminated: received SIGTERM``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "status": "running", "scenario": scenario, "seed": cfg.seed,
        "market_seed": cfg.world.market_seed,  # the marketplace's seed where it is pinned
        "startup_seed": cfg.training.startup_seed,  # the start-up's seed where it is pinned
        "config_hash": config_hash(cfg), "packages": package_versions(),
        "argv": sys.argv, "sim_start_s": 0.0, "sim_end_s": cfg.days * 86_400.0,
        "wall_start": _now(), "wall_end": None, "wall_s": None, "error": None,
    }
    with recorded(manifest, run_dir / "manifest.json") as started:
        return _run(cfg, run_dir, scenario, progress, manifest, started)


def _run(cfg: Config, run_dir: Path, scenario: str, progress: Progress | None,
         manifest: dict[str, Any], started: float) -> dict[str, Any]:
    writer = LogWriter(run_dir / "logs", cfg.logs.flush_rows)
    sim = Simulation.from_config(cfg, writer, progress)
    setup_s = time.perf_counter() - started
    stats = sim.run()
    wall = time.perf_counter() - started
    offline = sim.evaluate()
    manifest["rows"] = writer.close()
    manifest["evaluation_s"] = time.perf_counter() - started - wall
    metrics = summarize(run_dir, list(cfg.experiment.arms), cfg.days, cfg.experiment.ramp,
                        extra={"warmup": stats.bootstrap, "offline": offline.json(),
                               "releases": sim.world.lifecycle.releases,
                               "training_log_keep": sim.world.training_log.keep},
                        clusters=cfg.experiment.ci_clusters,
                        funnel_sizes={a.name: (a.cfg.auction.n_slots, a.cfg.funnel.k_l1)
                                      for a in sim.arms},
                        serving_setup={a.name: serving_setup(a.cfg) for a in sim.arms},
                        rollout_delay={a.name: a.cfg.releases.query_rollout_delay_s
                                       for a in sim.arms}, tick_s=cfg.traffic.tick_s)
    if cfg.experiment.ground_truth and len(cfg.experiment.arms) == 2:
        worlds = [run(_at_share(cfg, share), run_dir / "ground_truth" / f"share_{share:.0f}",
                      scenario) for share in (0.0, 100.0)]
        metrics["ground_truth"] = ground_truth(metrics, *worlds)
    if cfg.experiment.exposure_twin:
        metrics["exposure_twin"] = run(held_share(cfg), run_dir / "exposure_twin",
                                       scenario).get("exposure")
    write_json_atomic(run_dir / "metrics.json", metrics)
    manifest["checkpoints"] = dataclasses.asdict(sim.world.checkpoints.stats)
    manifest["threads"] = dataclasses.asdict(sim.world.threads)
    manifest["cpu_path"] = observed()
    manifest.update({
        "status": "complete", "requests": stats.requests, "setup_s": setup_s,
        "data_plane_s": stats.data_plane_s, "opening_s": stats.opening_s,
        "releases_s": sim.world.lifecycle.release_s,
        "requests_per_s": stats.requests / max(wall - setup_s - stats.opening_s, 1e-9),
    })
    return metrics
