"""The store: records as Parquet daily partitions, a durable buffered writer, DuckDB reads.

>>> import tempfile
>>> from perfnb.store import Store
>>> Store(tempfile.mkdtemp()).days()
[]
"""

from __future__ import annotations

from perfnb.store.compact import CompactResult
from perfnb.store.store import Store
from perfnb.store.writer import StoreWriter

__all__ = ["CompactResult", "Store", "StoreWriter"]
