"""perfnb: watch a web application's performance live in JupyterLab, load-test it, and
write the post-mortem — from one record schema, a Parquet store and a live stream."""

from __future__ import annotations

from perfnb.errors import PerfnbError, RecordError
from perfnb.schema import SCHEMA_VERSION, Record, Sink, validate_record

__all__ = [
    "SCHEMA_VERSION",
    "PerfnbError",
    "Record",
    "RecordError",
    "Sink",
    "validate_record",
]
