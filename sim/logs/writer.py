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


_INTEGERS: dict[type[pl.DataType], Any] = {
    pl.Int8: np.int8, pl.Int16: np.int16, pl.Int32: np.int32, pl.Int64: np.int64,
    pl.UInt8: np.uint8, pl.UInt16: np.uint16, pl.UInt32: np.uint32, pl.UInt64: np.uint64}


def _column(table: str, name: str, value: Any, dtype: pl.DataType, n: int) -> np.ndarray | Coded:
    """One appended column as an (n,) numpy array of its own (or a :class:`Coded`), checked now
    where a value can fail its column: an integer column takes integral values in its range
    (integral floats, e.g. a mean of equal counts, are the integers they are), never a null or a
    truncation."""
    if isinstance(value, Coded):
        return Coded(tuple(str(x) for x in value.names), np.array(value.codes, copy=True))
    arr = np.asarray(value.item() if isinstance(value, np.generic) else value)
    if isinstance(dtype, pl.List):  # a vector per row: an (n, width) array
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"table `{table}`, column `{name}`: a vector column takes an "
                             f"({n}, width) array, not one of shape {arr.shape}")
        return np.array(arr, copy=True)
    if dtype.is_integer() and arr.dtype.kind in "fiub":
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise TypeError(f"table `{table}`, column `{name}`: non-integral float values "
                                f"for an integer column ({dtype})")
            arr = arr.astype(np.int64)  # integral: nothing is lost
        info = np.iinfo(_INTEGERS[type(dtype)])
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise ValueError(f"table `{table}`, column `{name}`: values do not fit {dtype}: "
                             f"range {int(arr.min())}..{int(arr.max())}")
    return np.array(np.broadcast_to(arr, (n,)), copy=True)


def _series(table: str, name: str, parts: list[np.ndarray | Coded], dtype: pl.DataType) -> pl.Series:
    """The buffered parts of one column as one Series, cast strictly to its declared type: a value
    that does not fit is an error naming the table and column."""
    if all(isinstance(x, Coded) for x in parts):
        coded = [x for x in parts if isinstance(x, Coded)]
        if all(c.names == coded[0].names for c in coded):  # one gather for the whole part
            return pl.Series(name, list(coded[0].names), dtype=pl.String).gather(
                np.concatenate([c.codes for c in coded]))
        return pl.concat([pl.Series(name, list(c.names), dtype=pl.String).gather(c.codes)
                          for c in coded])
    if any(isinstance(x, Coded) for x in parts):
        raise TypeError(f"table `{table}`, column `{name}`: coded and plain values mixed")
    arr = np.concatenate([x for x in parts if isinstance(x, np.ndarray)])
    if isinstance(dtype, pl.List):
        want = np.float32 if dtype.inner == pl.Float32 else np.float64
        if arr.ndim != 2 or arr.dtype != want:
            raise ValueError(f"table `{table}`, column `{name}`: {arr.dtype} vectors of shape "
                             f"{arr.shape[1:]} for a column of {dtype} (parts of equal width, "
                             "of that float type)")
        return pl.Series(name, arr).cast(dtype)
    try:
        return pl.Series(name, arr, dtype=dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, TypeError,
            OverflowError) as e:
        raise ValueError(f"table `{table}`, column `{name}`: values do not fit {dtype}: {e}") from e


class LogWriter:
    """Appends column batches to the declared tables and writes parquet on :meth:`close`.

    An append keeps its columns as numpy arrays (integer columns checked at once); the polars
    columns are built once per part of ``flush_rows`` rows, not once per append."""

    def __init__(self, log_dir: Path, flush_rows: int) -> None:
        self.dir = log_dir
        self.parts_dir = log_dir / ".parts"
        self.flush_rows = flush_rows
        self._buffers: dict[str, list[dict[str, np.ndarray | Coded]]] = {t: [] for t in SCHEMAS}
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
        n = max((np.size(v.codes) if isinstance(v, Coded) else np.shape(v)[0]
                 for v in columns.values() if isinstance(v, Coded) or np.ndim(v) > 0), default=1)
        if n == 0:
            return
        self._buffers[table].append({c: _column(table, c, columns[c], dt, n)
                                     for c, dt in schema.items()})
        self._buffered[table] += n
        self.rows[table] += n
        if self._buffered[table] >= self.flush_rows:
            self._flush(table)

    def _flush(self, table: str) -> None:
        if not self._buffers[table]:
            return
        out = self.parts_dir / table
        out.mkdir(exist_ok=True)
        parts = self._buffers[table]
        frame = pl.DataFrame([_series(table, c, [p[c] for p in parts], dt)
                              for c, dt in SCHEMAS[table].items()])
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
