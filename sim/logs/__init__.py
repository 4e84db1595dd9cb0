"""Log tables: one declared schema per table, streamed to parquet under ``RUN_DIR/logs``."""

from sim.logs.schema import SCHEMAS
from sim.logs.writer import LogWriter, write_json_atomic

__all__ = ["SCHEMAS", "LogWriter", "write_json_atomic"]
