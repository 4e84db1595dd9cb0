"""``python -m sim.readiness``: the version-skew readiness check of any L1 family, without serving.

The retrospective's second pattern: every new model family goes through a version-skew sensitivity check
as part of model readiness. A team runs it on its own architecture, on the production logs,
before the family serves anything::

    python -m sim.readiness --families simple,dhen          # makes version_skew's logs first
    python -m sim.readiness --families simple,dhen replicates=5   # five worlds, seeds 0-4
    PYTHONPATH=examples python -m sim.readiness --run RUN_DIR --families simple,wide_tower:WideTwoTower
    python -m sim.readiness --run RUN_DIR --families dhen models.dhen_layer_norm=false

**What it does.** A world's releases are replayed from its training logs (the table
``training_rows``, which a run writes with ``logs.training_rows=true``): the start-up training of
the control's L2 and of every checked family from the world's exploration log, then at each
release time the same window of logged rows, the same sample and the same random draws as in the
run, the control's L2 warm-started and every family distilled from it (the treatment's too,
when it serves a checked family), and at the end the skew
sweep (:func:`sim.evaluation.skew_sweep`) and the gate on the same evaluation rows. Nothing is
served: no funnel, auction or index runs, so a check costs the training of the checked families.
The world is built by the run's builder without its serving stack
(:func:`sim.build.build_world`), and the releases come from the run's release process on a SimPy
environment (:meth:`sim.lifecycle.Lifecycle.releaser`), fed the logged rows at the times the run
appended them; so the check's ``model_releases`` and ``rollouts`` logs are the run's, row for row.

**It agrees with the run.** A family the run checked (``readiness.families``) gets the same sweep
and gate here, to the last bit on the same machine and thread count, because it is the same
computation on the same inputs: each family checked beside the control's L1 starts its draws
where the control's L1 ended (:class:`sim.models.fitting.RngState`), so which other families
are checked with it does not matter. A family an arm serves is that arm's own lineage, here as in
the run: for a family the treatment serves, the treatment's releases are replayed too.

**Where the logs come from.** ``--run RUN_DIR`` reads a finished run's (made with
``logs.training_rows=true``). Without it, the check first makes them: it runs the world of
``scenario=NAME`` (default ``version_skew``: five days of daily releases, where the default
scenario's two days give two versions, too few for the gate at distance 2) and the overrides
given (all arms, with the training rows logged and the control's fits kept in
``OUT/checkpoints``, so the replay loads them rather than training them a second time) into
``OUT/world``; check more families later with ``--run OUT/world``.

**Overrides.** Without ``--run``: any config key, as on ``python -m sim``. With it, the world is
the run's: only ``readiness.*`` (the gate's distance and threshold, the sweep's reach),
``models.*`` (the families' hyperparameters; the sweep then no longer matches the run's for a
family whose knobs changed) and ``cache.*`` (where fits are loaded from and kept; the run's cache
by default) may be given.

**Across worlds.** A gate read at one seed is one draw (the ``version_skew`` lesson's gates flip
between seeds). ``replicates=N`` makes and checks the worlds of seeds 0 .. N-1 (each in
``OUT/seed_K``); ``--run DIR1 DIR2 ...`` checks several runs (each in ``OUT/K_NAME``). Then
``readiness_worlds.json`` and ``readiness_worlds.png`` give each family's passes out of the worlds
and its increase at the gate's distance per world, with the median and range, and the last table
printed says the same.

**Output** (``--out``, default ``outputs/DATE/TIME_readiness``): ``readiness.json`` (families,
their lineages, the gate and the sweep, the source run, timings), ``readiness.png`` (the sweep,
with the gate), ``logs/`` (``skew_sweep``; ``model_releases`` and ``rollouts``, the run's own
rows), ``manifest.json`` (``running``, then ``complete`` or ``failed``). It prints a table and
the gate of each family; its last line is ``out_dir: PATH``. Exit status 0 whether the families
pass or fail; 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import simpy
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.api import simulate_config
from sim.build import build_world
from sim.clock import StagedEnvironment
from sim.config import ConfigError, load_config
from sim.config.schema import Config
from sim.config.store import check_overrides, to_config
from sim.config.validate import validate
from sim.evaluation import evaluation_rows, skew_sweep
from sim.logs.writer import LogWriter, write_json_atomic
from sim.models.checkpoints import CacheStats
from sim.models.training_log import LoggedRows, TrainingLog
from sim.report.plots import readiness_gates as plot_gates
from sim.report.plots import skew_sweep as plot_sweep
from sim.results import EvalWindow, SkewCurve, SkewGate, to_json
from sim.run import recorded
from sim.threads import Threads

# the world made when no --run is given: five days of daily releases (the gate needs at least
# readiness.gate_distance + 1 versions; the default scenario has two)
DEFAULT_SCENARIO = "version_skew"
RUN_KEYS = ("readiness.", "models.", "cache.")  # what may change with --run: the check, not the world


@dataclass(frozen=True)
class Readiness:
    """The check's result: each family's lineage, sweep and gate (typed, :mod:`sim.results`;
    :func:`sim.results.to_json` gives them as ``metrics.json``'s ``offline.skew_sweep`` /
    ``offline.skew_gate`` hold them)."""

    lineages: dict[str, str]  # family -> lineage
    sweep: dict[str, SkewCurve]
    gate: dict[str, SkewGate]
    releases: int
    eval_window: EvalWindow
    source: Path  # the run directory whose logs were replayed
    checkpoints: CacheStats  # fits trained, loaded and kept (sim.models.checkpoints)

    def table(self) -> str:
        """Excess-loss change against the clean pairing by version distance, and the gate."""
        ks = sorted({k for by_k in self.sweep.values() for k in by_k})
        head = f"{'family':<32}" + "".join(f"{'k=' + str(k):>9}" for k in ks) + "   gate"
        lines = [head, "-" * len(head)]
        for family, by_k in self.sweep.items():
            base = by_k[0]["all"].excess_loss or 1.0
            cells = [f"{100 * by_k[k]['all'].delta.excess_loss / base:>+8.1f}%"
                     if k in by_k else f"{'':>9}" for k in ks]
            g = self.gate[family]
            inc = "n/a" if g.increase is None else f"{100 * g.increase:+.1f}%"
            lines.append(f"{family:<32}" + "".join(cells) +
                         f"   {g.result} ({inc} at k={g.distance}, "
                         f"threshold +{100 * g.threshold:.0f}%)")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:  # a notebook shows the table
        return "```\n" + self.table() + "\n```"


def training_chunks(run_dir: Path) -> list[tuple[float, LoggedRows]]:
    """A run's training-log chunks in append order, each with the time it was appended."""
    frame = pl.read_parquet(run_dir / "logs" / "training_rows.parquet").sort(
        "chunk", maintain_order=True)
    chunk = frame["chunk"].to_numpy()
    width = frame["ad_features"].list.len().max()
    columns: dict[str, np.ndarray] = {
        f.name: (frame[f.name].cast(pl.Array(pl.Float32, int(width))).to_numpy()  # type: ignore[arg-type]
                 if f.name == "ad_features" else frame[f.name].to_numpy())
        for f in dataclasses.fields(LoggedRows)}
    rows = LoggedRows(**columns)
    starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
    ends = np.r_[starts[1:], len(chunk)]
    logged_at = frame["logged_at"].to_numpy()
    return [(float(logged_at[a]), rows.take(np.arange(a, b)))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def feed(env: StagedEnvironment, log: TrainingLog, logged_at: float, rows: list[LoggedRows]
         ) -> Generator[simpy.Event, None, None]:
    """Started at time 0: at ``logged_at`` (reached in one step from 0, so exactly the run's
    time) append ``rows`` to ``log`` in the traffic's stage; a release at that instant runs first
    and does not see them, as in the run."""
    if logged_at > 0:
        yield env.wait("traffic", logged_at)
    for chunk in rows:
        log.append(chunk)


def replay(cfg: Config, families: list[str], chunks: list[tuple[float, LoggedRows]],
           writer: LogWriter, threads: Threads | None = None, source: Path = Path()) -> Readiness:
    """Replay a run's releases on ``chunks`` with ``families`` trained beside the control's L1
    (or the treatment's own, for a family it serves), then sweep them (see the module
    docstring). The world is built as a run builds it, without serving
    (:func:`sim.build.build_world`), and its releases come from the run's release process."""
    world = build_world(cfg, writer, threads=threads, checked=families, serving=False)
    env = world.env
    at: dict[float, list[LoggedRows]] = {}
    for logged_at, chunk in chunks:  # in append order, which same-time chunks keep
        at.setdefault(logged_at, []).append(chunk)
    for logged_at, batch in at.items():
        env.process(feed(env, world.training_log, logged_at, batch))
    env.process(world.lifecycle.releaser(env, env.wait))
    env.run(until=world.horizon)
    evaluated = [lin for a in world.arms for lin in (a.l1_lineage, a.l2_lineage)]
    rows, window = evaluation_rows(world.training_log, world.registry, evaluated, world.horizon,
                                   world.cfg, world.streams.get("offline_eval"), world.market.users)
    if rows is None:
        raise ConfigError("the run's last training window holds no rows to sweep on (a horizon "
                          "shorter than releases.train_window_s after the last release?)")
    out = skew_sweep(world.registry, world.sweep_lineages, "control/l2", rows, world.market.users,
                     world.cfg, writer)
    return Readiness(lineages=world.sweep_lineages, sweep=out.curves,
                     gate=out.gates, releases=world.lifecycle.releases,
                     eval_window=window, source=source,
                     checkpoints=world.checkpoints.stats)


def run_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config ``run_dir`` was made with, with ``overrides`` (``readiness.*``, ``models.*``)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml (not a run directory?)")
    bad = [o for o in overrides if not o.lstrip("+").startswith(RUN_KEYS)]
    if bad:
        raise ConfigError(f"overrides {bad}: with --run the world is the run's; only "
                          f"{', '.join(k + '*' for k in RUN_KEYS)} may change")
    check_overrides(overrides)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path),
                                 OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    except OmegaConfBaseException as exc:
        raise ConfigError(str(exc).strip()) from None
    return to_config(merged)  # type: ignore[arg-type]


def check_families(cfg: Config, families: list[str]) -> None:
    """At least one family, each built in or importable and an L1 family class, as
    ``readiness.families`` would be (the error names ``readiness.families[i]``)."""
    if not families:
        raise ConfigError("--families: name at least one L1 family")
    validate(dataclasses.replace(cfg, readiness=dataclasses.replace(cfg.readiness,
                                                                    families=list(families))))


def preflight(families: list[str], run_dir: Path, overrides: list[str]) -> Config:
    """The config a check of ``run_dir`` runs with, after every check that needs no training:
    the overrides, the families (importable, each a ``TwoTowerBase``, as ``readiness.families``
    would be) and the run's training rows being there."""
    cfg = run_config(run_dir, overrides)
    check_families(cfg, families)
    path = run_dir / "logs" / "training_rows.parquet"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no logs/training_rows.parquet (not a finished run "
                          "directory?)")
    if pl.scan_parquet(path).select(pl.len()).collect().item() == 0:
        raise ConfigError(f"{run_dir}: the run logged no training rows; make the world with "
                          "logs.training_rows=true")
    return cfg


def check(families: list[str], run_dir: str | Path, out_dir: str | Path,
          overrides: list[str] | None = None) -> Readiness:
    """The readiness check of ``families`` on the logs of ``run_dir``, written to ``out_dir``."""
    src, out = Path(run_dir), Path(out_dir)
    cfg = preflight(families, src, list(overrides or []))
    chunks = training_chunks(src)
    manifest: dict[str, Any] = {"status": "running", "source": str(src), "families": families,
                                "overrides": list(overrides or []), "error": None}
    out.mkdir(parents=True, exist_ok=True)
    with recorded(manifest, out / "manifest.json"):
        writer = LogWriter(out / "logs", cfg.logs.flush_rows)
        result = replay(cfg, families, chunks, writer, source=src)
        writer.close()
        write_json_atomic(out / "readiness.json", {
            "source": str(src), "families": result.lineages, "releases": result.releases,
            "eval_window": to_json(result.eval_window), "skew_gate": to_json(result.gate),
            "skew_sweep": to_json(result.sweep)})
        plot_sweep({"offline": {"skew_sweep": to_json(result.sweep),
                                "skew_gate": to_json(result.gate)}},
                   out / "readiness.png")
        manifest.update({"status": "complete",
                         "checkpoints": dataclasses.asdict(result.checkpoints)})
    return result


def across_worlds(results: list[Readiness], seeds: list[int]) -> dict[str, Any]:
    """Each family's gate over several worlds: how many pass, and the increase at the gate's
    distance per world with its median and range (``None`` where a world has too few versions)."""
    out: dict[str, Any] = {}
    for family in results[0].gate:
        gates = [r.gate[family] for r in results]
        inc = [g.increase for g in gates]
        known = [x for x in inc if x is not None]
        out[family] = {
            "distance": gates[0].distance, "threshold": gates[0].threshold,
            "worlds": len(gates), "seeds": seeds,
            "passes": sum(g.result == "pass" for g in gates),
            "not_enough_versions": sum(g.result == "not_enough_versions" for g in gates),
            "increase": {"by_world": inc,
                         "median": float(np.median(known)) if known else None,
                         "min": min(known, default=None), "max": max(known, default=None)}}
    return out


def across_table(summary: dict[str, Any]) -> str:
    """One line per family: passes out of worlds, the increase's median (range) and per world."""
    head = f"{'family':<32}{'passes':>10}   increase at the gate: median (range); per world"
    lines = [head, "-" * len(head)]
    for family, s in summary.items():
        inc = s["increase"]
        fmt = (lambda x: "n/a" if x is None else f"{100 * x:+.1f}%")  # noqa: E731
        spread = ("n/a" if inc["median"] is None else
                  f"{fmt(inc['median'])} ({fmt(inc['min'])} … {fmt(inc['max'])})")
        lines.append(f"{family:<32}{str(s['passes']) + ' of ' + str(s['worlds']):>10}   {spread}; "
                     + " / ".join(fmt(x) for x in inc["by_world"]))
    return "\n".join(lines)


def make_world(scenario: str, overrides: list[str], out: Path) -> Path:
    """Run ``scenario`` with ``overrides`` into ``out/world`` with its training rows logged and
    the fits kept in ``out/checkpoints`` (unless the config names a cache); return the run dir."""
    extra = {"logs.training_rows": "true", "experiment.ground_truth": "false",
             "experiment.exposure_twin": "false",
             "readiness.families": "[]"}  # the world's own sweep: its served families
    if load_config(scenario, overrides).cache.dir is None:
        extra["cache.dir"] = str((out / "checkpoints").resolve())
    kept = [o for o in overrides if o.lstrip("+").split("=", 1)[0] not in extra]
    cfg = load_config(scenario, kept + [f"{k}={v}" for k, v in extra.items()])
    world = out / "world"
    simulate_config(cfg, scenario, world)
    return world


def _default_out() -> Path:
    now = datetime.now()
    return Path("outputs") / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}_readiness"


def _worlds(args: argparse.Namespace) -> tuple[str, list[str], list[int] | None]:
    """The scenario, the config overrides and the seeds of the worlds to make (None: one world,
    or the runs given), from the command line's ``scenario=``, ``replicates=N`` and overrides."""
    scenario, overrides, seeds = DEFAULT_SCENARIO, [], None
    for o in args.overrides:
        key, _, value = o.partition("=")
        if key == "scenario":
            scenario = value
        elif key == "replicates":
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"replicates={value}: a number of worlds >= 1 (seeds 0 .. N-1)")
            seeds = list(range(int(value)))
        else:
            overrides.append(o)
    if args.run and (scenario != DEFAULT_SCENARIO or seeds is not None
                     or any(o.startswith("scenario=") for o in args.overrides)):
        raise ConfigError("scenario= and replicates=: with --run the worlds are the runs'")
    if seeds is not None and any(o.lstrip("+").startswith("seed=") for o in overrides):
        raise ConfigError("replicates=N makes seeds 0 .. N-1: leave seed= out")
    return scenario, overrides, seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.readiness", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="simple,dhen",
                    help="comma-separated L1 families: built-in names or package.module:Class")
    ap.add_argument("--run", type=Path, nargs="+",
                    help="run directories made with logs.training_rows=true (one check each)")
    ap.add_argument("--out", type=Path, help="output directory (default outputs/DATE/TIME_readiness)")
    ap.add_argument("overrides", nargs="*",
                    help="scenario=NAME, replicates=N (seeds 0 .. N-1) and key=value overrides")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    out = args.out or _default_out()
    try:
        scenario, overrides, seeds = _worlds(args)
        check_overrides = [o for o in overrides if o.lstrip("+").startswith(RUN_KEYS)]
        if args.run:  # bad input stops here, before any check runs
            check_overrides = overrides
            for d in args.run:
                preflight(families, d, overrides)
            dirs = [(d, out if len(args.run) == 1 else out / f"{k}_{d.name}")
                    for k, d in enumerate(args.run)]
        else:
            # bad input stops here, before any world runs
            check_families(load_config(scenario, overrides), families)
            per = [(None, out)] if seeds is None else [(s, out / f"seed_{s}") for s in seeds]
            dirs = []
            for seed, where in per:
                started = time.perf_counter()
                print(f"making the world's logs: scenario={scenario}"
                      f"{'' if seed is None else f' seed={seed}'} -> {where / 'world'}", flush=True)
                given = overrides if seed is None else [*overrides, f"seed={seed}"]
                dirs.append((make_world(scenario, given, where), where))
                print(f"world: {time.perf_counter() - started:.1f} s", flush=True)
        results = []
        for run_dir, where in dirs:
            t0 = time.perf_counter()
            results.append(check(families, run_dir, where, check_overrides))
            print(f"readiness check: {time.perf_counter() - t0:.1f} s on the logs of {run_dir} "
                  f"({results[-1].releases} releases)")
            print(results[-1].table(), flush=True)
    except (ConfigError, HydraException) as exc:
        cause = f" ({str(exc.__cause__).strip()})" if exc.__cause__ else ""
        print(f"config error: {str(exc).strip()}{cause}", file=sys.stderr)
        return 2
    if len(results) > 1:
        used = [run_config(r.source, []).seed for r in results]
        summary = across_worlds(results, used)
        write_json_atomic(out / "readiness_worlds.json", {
            "runs": [str(r.source) for r in results], "families": summary})
        plot_gates(summary, out / "readiness_worlds.png")
        print(f"across {len(results)} worlds (seeds {', '.join(map(str, used))}):")
        print(across_table(summary))
    print(f"out_dir: {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
