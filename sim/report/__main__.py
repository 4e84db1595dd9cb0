"""``python -m sim.report DIR [--attribute [--hazards H,...] [--jobs N [--backend loky|ray]]]
[--metric KEY] [--x KEY]``.

``DIR`` is a run directory (``report.md`` and ``plots/`` are written into it) or a Hydra multirun
directory (``sweep.parquet``, ``sweep.md`` and ``plots/sweep_*.png``; with worlds at two seeds or
more, ``replicates.md`` and ``replicates.json`` too: :mod:`sim.report.replicates`). ``--attribute`` first
re-runs a run's world with each present hazard switched off (``sim.report.attribution``) and
adds the ``attribution`` entry to its ``metrics.json``; ``--jobs N`` runs N of those worlds at a
time, on local processes or a Ray cluster (:func:`sim.report.attribution.attribute`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sim.logs.writer import write_json_atomic
from sim.report.attribution import attribute
from sim.report.replicates import make_replicates_report
from sim.report.run_report import ReportError, make_report
from sim.report.sweep import make_sweep_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.report",
                                description="Write the online/offline report of a run or a sweep.")
    p.add_argument("dir", type=Path, help="a run directory or a Hydra multirun directory")
    p.add_argument("--attribute", action="store_true",
                   help="re-run the world with each present hazard switched off, attribute the gap")
    p.add_argument("--hazards", default=None,
                   help="with --attribute: comma-separated subset of the present hazards to switch")
    p.add_argument("--jobs", type=int, default=1,
                   help="with --attribute: worlds run at a time (each at the run's thread counts)")
    p.add_argument("--backend", default="loky", choices=("loky", "ray"),
                   help="with --attribute --jobs N: local processes (loky) or a Ray cluster (ray)")
    p.add_argument("--metric", default=None, help="sweep: the metrics.json key to plot (dotted)")
    p.add_argument("--x", default=None, help="sweep: the swept key on the x axis")
    args = p.parse_args(argv)
    try:
        if (args.dir / "multirun.yaml").exists():
            if args.attribute or args.hazards:
                raise ReportError(f"--attribute applies to a run directory; {args.dir} is a "
                                  f"sweep (report one of its jobs, e.g. {args.dir}/0)")

            replicates = make_replicates_report(args.dir)
            path = make_sweep_report(args.dir, metric=args.metric, x=args.x, replicates=replicates)
            if replicates is not None:
                print(f"across seeds: {replicates}")
        else:
            if args.metric or args.x:
                raise ReportError("--metric and --x apply to a sweep directory (with multirun.yaml)")
            if args.hazards and not args.attribute:
                raise ReportError("--hazards needs --attribute")
            if args.attribute:
                hazards = args.hazards.split(",") if args.hazards else None
                result = attribute(args.dir, hazards, jobs=args.jobs, backend=args.backend)
                metrics_path = args.dir / "metrics.json"
                metrics = json.loads(metrics_path.read_text())
                metrics["attribution"] = result
                write_json_atomic(metrics_path, metrics)
            path = make_report(args.dir)
    except ReportError as exc:
        print(f"report error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
