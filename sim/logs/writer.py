"""Streaming parquet writer: bounded memory, files under their final names only when complete.

Rows are buffered per table; every ``flush_rows`` rows a part file is written to
``logs/.parts/<table>/``. :meth:`LogWriter.close` streams the parts of each table into
``logs/<table>.parquet.tmp`` and renames it to ``logs/<table>.parquet``. A run that dies leaves
only ``.parts`` and ``.tmp`` files, never a half file under a final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sim.logs.schema import SCHEMAS


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path.tmp`` then rename it to ``path`` (creating the parent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path.tmp`` then rename it to ``path``."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


@dataclass(frozen=True)
class Coded:
    """A string column given as integer ``codes`` into a short sequence of ``names``: written
    by a gather in polars, without a Python string per row (the data plane logs surfaces,
    objectives, tiers and sources this way)."""

    names: Sequence[str] | np.ndarray
    codes: np.ndarray


def _series(table: str, name: str, value: Any, dtype: pl.DataType, n: int) -> pl.Series:
    """One column, cast strictly to its declared type: an out-of-range or non-integral value is
    an error naming the table and column, never a null or a truncation (integral floats, e.g. a
    mean of equal counts, are written as the integers they are)."""
    if isinstance(value, Coded):
        return pl.Series(name, [str(x) for x in value.names], dtype=pl.String).gather(value.codes)
    arr = np.asarray(value.item() if isinstance(value, np.generic) else value)
    if dtype.is_integer() and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise TypeError(f"table `{table}`, column `{name}`: non-integral float values for "
                            f"an integer column ({dtype})")
        arr = arr.astype(np.int64)  # integral: nothing is lost
    try:
        if arr.ndim == 0:  # one value for every row
            return pl.Series(name, [arr.item()], dtype=dtype, strict=True).new_from_index(0, n)
        return pl.Series(name, np.broadcast_to(arr, (n,)), dtype=dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, TypeError,
            OverflowError) as e:
        raise ValueError(f"table `{table}`, column `{name}`: values do not fit {dtype}: {e}") from e


class LogWriter:
    """Appends column batches to the declared tables and writes parquet on :meth:`close`."""

    def __init__(self, log_dir: Path, flush_rows: int) -> None:
        self.dir = log_dir
        self.parts_dir = log_dir / ".parts"
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[pl.DataFrame]] = {t: [] for t in SCHEMAS}
        self._buffered: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self._parts: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self.rows: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self.parts_dir.mkdir(parents=True, exist_ok=True)

    def append(self, table: str, columns: dict[str, Any]) -> None:
        """Add rows: ``columns`` maps every column of the table's schema to an array or scalar."""
        schema = SCHEMAS[table]
        if set(columns) != set(schema):
            missing, extra = set(schema) - set(columns), set(columns) - set(schema)
            raise ValueError(f"table `{table}`: missing columns {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        n = max((np.size(v.codes) if isinstance(v, Coded) else np.size(v)
                 for v in columns.values() if isinstance(v, Coded) or np.ndim(v) > 0), default=1)
        if n == 0:
            return
        data = [_series(table, c, columns[c], dt, n) for c, dt in schema.items()]
        self._buffers[table].append(pl.DataFrame(data))
        self._buffered[table] += n
        self.rows[table] += n
        if self._buffered[table] >= self.flush_rows:
            self._flush(table)

    def _flush(self, table: str) -> None:
        if not self._buffers[table]:
            return
        out = self.parts_dir / table
        out.mkdir(exist_ok=True)
        frame = pl.concat(self._buffers[table], rechunk=True)
        frame.write_parquet(out / f"part-{self._parts[table]:05d}.parquet")
        self._parts[table] += 1
        self._buffers[table], self._buffered[table] = [], 0

    def close(self) -> dict[str, int]:
        """Write every table to its final name; return the row count per table."""
        for table, schema in SCHEMAS.items():
            self._flush(table)
            final = self.dir / f"{table}.parquet"
            tmp = self.dir / f"{table}.parquet.tmp"
            if self._parts[table] == 0:
                pl.DataFrame(schema=schema).write_parquet(tmp)
            else:
                pl.scan_parquet(self.parts_dir / table / "*.parquet").sink_parquet(tmp)
            os.replace(tmp, final)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return dict(self.rows)
