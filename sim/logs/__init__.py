"""Log tables: one declared schema per table, streamed to parquet under ``RUN_DIR/logs``, and
read back as polars ``LazyFrame``s (:func:`load`)."""

from sim.logs.reader import load
from sim.logs.schema import SCHEMAS
from sim.logs.writer import LogWriter, write_json_atomic

__all__ = ["SCHEMAS", "LogWriter", "load", "write_json_atomic"]
