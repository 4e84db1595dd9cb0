"""Run by ``test_cpu_path.py`` in a fresh process (the CPU code path is chosen when the libraries
load, so the test process itself cannot switch): runs a tiny A/B world with a ``dhen`` treatment
(``l1_cvr_discrepancy``) into the directory given, and prints one JSON line: a digest of its
``metrics.json`` (wall times left out) and of every log table, and the manifest's ``cpu_path``."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import polars as pl

from sim.config import load_config
from sim.run import run

from conftest import TINY

WALL = {"wall_s", "setup_s", "data_plane_s", "evaluation_s", "releases_s", "requests_per_s",
        "build_s"}


def without_wall(node: object) -> object:
    if isinstance(node, dict):
        return {k: without_wall(v) for k, v in node.items()
                if k not in WALL and not k.endswith("_wall_s")}
    if isinstance(node, list):
        return [without_wall(v) for v in node]
    return node


def main(run_dir: Path) -> None:
    metrics = run(load_config("l1_cvr_discrepancy", [*TINY, "progress=off",
                                                     "experiment.exposure_twin=false"]), run_dir,
                  scenario="l1_cvr_discrepancy")
    logs = hashlib.sha256()
    for path in sorted((run_dir / "logs").rglob("*.parquet")):
        table = pl.read_parquet(path)
        table = table.drop([c for c in table.columns if c in WALL])
        logs.update(path.name.encode())
        logs.update(table.write_ipc(None).getvalue())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    print(json.dumps({
        "metrics": hashlib.sha256(json.dumps(without_wall(metrics), sort_keys=True,
                                             default=str).encode()).hexdigest(),
        "logs": logs.hexdigest(), "cpu_path": manifest["cpu_path"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
