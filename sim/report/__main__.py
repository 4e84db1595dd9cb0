"""``python -m sim.report DIR [--attribute] [--metric KEY] [--x KEY]``.

``DIR`` is a run directory (``report.md`` and ``plots/`` are written into it) or a Hydra multirun
directory (``sweep.parquet``, ``sweep.md`` and ``plots/sweep_*.png``). ``--attribute`` first
re-runs a run's world with each hazard switched off (see ``sim.report.attribution``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.report.run_report import ReportError, make_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.report", description=__doc__.split("\n\n")[1])
    p.add_argument("dir", type=Path, help="a run directory or a Hydra multirun directory")
    p.add_argument("--attribute", action="store_true",
                   help="re-run the world with each present hazard switched off, attribute the gap")
    args = p.parse_args(argv)
    try:
        path = make_report(args.dir)
    except ReportError as exc:
        print(f"report error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
