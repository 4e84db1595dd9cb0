"""Reading a run's log tables back: one polars ``LazyFrame`` per ``logs/NAME.parquet``."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sim.logs.schema import SCHEMAS


def load(run_dir: str | Path) -> dict[str, pl.LazyFrame]:
    """Every log table of a run directory (this one or any earlier run), by table name, as a
    lazy scan of its parquet file: nothing is read until ``.collect()``. Tables the run did not
    write (a table with no rows, a table added after the run was made) are absent. Raises
    ``FileNotFoundError`` when ``run_dir`` has no ``logs/`` directory.

    Analysts who prefer SQL can query the same files with DuckDB (not a dependency of adsim)::

        import duckdb
        duckdb.sql(f"SELECT arm, avg(cost) FROM '{run_dir}/logs/impressions.parquet' GROUP BY arm")
    """
    logs = Path(run_dir) / "logs"
    if not logs.is_dir():
        raise FileNotFoundError(f"{run_dir}: no logs/ directory (not a finished run directory?)")
    tables = {p.stem: pl.scan_parquet(p) for p in sorted(logs.glob("*.parquet"))}
    unknown = sorted(set(tables) - set(SCHEMAS))
    if unknown:
        raise ValueError(f"{logs}: files that are no declared log table: {unknown}")
    return tables
