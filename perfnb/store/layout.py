"""How the store lays records out: the table it works with and the Parquet it writes.

Two forms of the record schema meet here:

* :func:`table_schema` — the store's in-memory form: :func:`perfnb.schema.arrow_schema`
  with the ``*_ms`` columns as ``float64`` milliseconds. Writers build it, reads and
  :meth:`Store.read` return it.
* :func:`disk_schema` — the form in the files: the ``*_ms`` columns as
  ``decimal(18, 3)`` milliseconds stored as Parquet ``INT64`` microseconds. The value
  is exact to the microsecond, and DuckDB, Spark and Trino read it as a millisecond
  decimal without being told anything, so the files stay self-describing.

Why integers: durations are measured to the microsecond, so as floats their low
mantissa bits look random and cost ~2.3 bytes a value even split by byte stream;
the same values as integer microseconds cost ~1.3–2.2 bytes.

Inside one file rows are laid out for compression, not in time order: each row
group holds a consecutive slice of time (so the row groups' ``time`` statistics
still prune), and within it rows run by the :data:`CLUSTER_BY` columns, then time.
Durations and sizes of one route resemble each other far more than those of
consecutive requests, which saves ~1 byte per row; readers sort by time
(:meth:`Store.read` does).

Files carry the layout's number (:data:`LAYOUT`) beside the schema version in their
metadata. Files of the first layout (``*_ms`` as ``float32``, rows in time order)
read unchanged: :func:`from_disk` accepts both forms and :func:`is_current` tells
them apart.

>>> import pyarrow as pa
>>> disk_schema().field("duration_ms").type
Decimal64Type(decimal64(18, 3))
>>> table = table_schema().empty_table()
>>> from_disk(to_disk(table)).schema.equals(table_schema())
True
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from perfnb.schema import COLUMNS, arrow_schema

__all__ = [
    "CLUSTER_BY",
    "LAYOUT",
    "MS_COLUMNS",
    "ROW_GROUP",
    "WRITE_OPTIONS",
    "disk_schema",
    "from_disk",
    "is_current",
    "legacy_schema",
    "sort_by_time",
    "table_schema",
    "to_disk",
]

#: The number of this layout, in each file's metadata under ``perfnb.layout``.
LAYOUT: Final = 2

#: Columns of milliseconds: float64 in memory, decimal(18, 3) on disk.
MS_COLUMNS: Final = tuple(
    c.name for c in COLUMNS if c.unit == "ms" and c.type in ("float32", "float64")
)
MS_DISK_TYPE: Final = pa.decimal64(18, 3)

#: Rows per row group: a few per daily file, so DuckDB scans a day on both cores.
ROW_GROUP: Final = 256 * 1024

#: Inside a row group, rows run by these columns (then time): one series after another.
CLUSTER_BY: Final = ("kind", "service", "route", "name", "method", "source")

CATEGORY_COLUMNS: Final = [c.name for c in COLUMNS if c.type == "category"]


def _encoding(name: str, kind: str) -> str | None:
    if kind == "timestamp":
        return "DELTA_BINARY_PACKED"  # sorted within a series: small deltas
    if name in MS_COLUMNS or kind.startswith("float"):
        return "BYTE_STREAM_SPLIT"  # the high bytes of similar values compress away
    if kind in ("int32", "int64"):
        # Sizes and counts: split bytes beat PLAIN (~0.5 B/row less on response
        # sizes) and delta packing (values of a series are not sorted).
        return "BYTE_STREAM_SPLIT"
    return None


#: Options for :func:`pyarrow.parquet.write_table` shared by every file of the store.
WRITE_OPTIONS: Final[dict[str, Any]] = {
    "compression": "zstd",
    # Level 3: higher levels save < 0.3 B/row and write 3–8x slower.
    "compression_level": 3,
    # Dictionaries on categorical columns and on status (a handful of codes: 0.16
    # instead of 0.25 B/row); everything else is numeric and would waste the work.
    "use_dictionary": [*CATEGORY_COLUMNS, "status"],
    "column_encoding": {
        c.name: enc for c in COLUMNS if (enc := _encoding(c.name, c.type)) is not None
    },
    "row_group_size": ROW_GROUP,
    # Min/max per row group: time prunes (row groups are slices of time), the rest
    # prunes whatever a file holds little of.
    "write_statistics": True,
    "store_decimal_as_integer": True,
}


@cache  # schemas are immutable; building one costs ~50 µs
def table_schema() -> pa.Schema:
    """The store's in-memory schema: the record schema with ``*_ms`` as float64.

    >>> table_schema().field("ttfb_ms").type
    DataType(double)
    """
    schema = arrow_schema()
    for name in MS_COLUMNS:
        index = schema.get_field_index(name)
        schema = schema.set(index, schema.field(index).with_type(pa.float64()))
    return schema


@cache
def disk_schema() -> pa.Schema:
    """The schema of the store's Parquet files: ``*_ms`` as ``decimal(18, 3)``."""
    schema = arrow_schema()
    for name in MS_COLUMNS:
        index = schema.get_field_index(name)
        schema = schema.set(index, schema.field(index).with_type(MS_DISK_TYPE))
    return schema.with_metadata({**schema.metadata, b"perfnb.layout": str(LAYOUT).encode()})


@cache
def legacy_schema() -> pa.Schema:
    """The schema of files of the store's first layout: ``*_ms`` as float32."""
    schema = arrow_schema()
    for name in MS_COLUMNS:
        index = schema.get_field_index(name)
        schema = schema.set(index, schema.field(index).with_type(pa.float32()))
    return schema


def is_current(schema: pa.Schema) -> bool:
    """Whether a file's schema is :func:`disk_schema`'s form (else the first layout's)."""
    index = schema.get_field_index(MS_COLUMNS[0])
    return index < 0 or bool(pa.types.is_decimal(schema.field(index).type))


def _to_micros(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    values = pc.fill_null(array, 0.0).to_numpy(zero_copy_only=False)
    micros = np.rint(values * 1000.0).astype(np.int64)
    mask = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
    return pa.array(micros, pa.int64(), mask=mask).view(MS_DISK_TYPE)


def _from_micros(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Arrow's decimal-to-float cast is off by an ulp on many values; dividing the
    # integer microseconds by 1000 is exact (the nearest float64 to the decimal).
    chunks = []
    for chunk in column.chunks:
        micros = chunk.view(pa.int64())
        values = pc.fill_null(micros, 0).to_numpy(zero_copy_only=False) / 1000.0
        mask = chunk.is_null().to_numpy(zero_copy_only=False) if chunk.null_count else None
        chunks.append(pa.array(values, pa.float64(), mask=mask))
    return pa.chunked_array(chunks, pa.float64())


def cluster_order(table: pa.Table, *, row_group: int = ROW_GROUP) -> np.ndarray | None:
    """Row order of :data:`CLUSTER_BY` within each slice of ``row_group`` rows.

    ``table`` is in time order with unified single-chunk dictionaries; the sort is
    stable, so each series stays in time order. ``None`` when nothing would move.
    """
    rows = table.num_rows
    key = np.zeros(rows, np.int64)
    span = 1
    for name in CLUSTER_BY:
        array = table.column(name).chunk(0) if table.column(name).num_chunks else None
        if array is None or array.null_count == rows:
            continue
        size = len(array.dictionary) + 1
        if size == 2 and array.null_count == 0:
            continue  # one value throughout
        if span * size >= 2**62:
            break  # more series than a key holds: the first columns cluster enough
        codes = array.indices.to_numpy(zero_copy_only=False)
        if array.null_count:
            codes = np.where(array.is_null().to_numpy(zero_copy_only=False), -1, codes)
        key = key * size + (codes.astype(np.int64) + 1)
        span *= size
    if span == 1:
        return None
    order = np.empty(rows, np.int64)
    for begin in range(0, rows, row_group):
        part = key[begin : begin + row_group]
        order[begin : begin + len(part)] = begin + np.argsort(part, kind="stable")
    return order


def to_disk(table: pa.Table) -> pa.Table:
    """A time-sorted table of :func:`table_schema` as the rows of one file.

    ``*_ms`` become decimal microseconds (rounded to the µs) and rows are clustered
    (see the module doc); nothing else changes.
    """
    table = table.cast(table_schema()) if not table.schema.equals(table_schema()) else table
    table = table.unify_dictionaries().combine_chunks()
    if table.num_rows > 1:
        order = cluster_order(table)
        if order is not None:
            # Columns that are null throughout (most, for any one kind) stay as they are.
            indices = pa.array(order)
            columns = [c if c.null_count == len(c) else c.take(indices) for c in table.columns]
            table = pa.Table.from_arrays(columns, schema=table.schema)
    for name in MS_COLUMNS:
        index = table.schema.get_field_index(name)
        table = table.set_column(
            index, table.schema.field(index).with_type(MS_DISK_TYPE), _to_micros(table[name])
        )
    return table.replace_schema_metadata(disk_schema().metadata)


def from_disk(table: pa.Table) -> pa.Table:
    """Columns read from a file of either layout, in the in-memory form of :func:`table_schema`.

    Only the ``*_ms`` columns change; ``table`` may hold any subset of the columns.
    """
    for name in MS_COLUMNS:
        index = table.schema.get_field_index(name)
        if index < 0:
            continue
        column = table.column(index)
        if pa.types.is_decimal(column.type):
            column = _from_micros(column)
        elif column.type != pa.float64():
            column = column.cast(pa.float64())
        else:
            continue
        field = table.schema.field(index).with_type(pa.float64())
        table = table.set_column(index, field, column)
    return table


def sort_by_time(table: pa.Table) -> pa.Table:
    """``table`` in time order (stable), untouched when it already is."""
    if table.num_rows < 2:
        return table
    times = table.column("time").cast(pa.int64()).to_numpy()
    if bool(np.all(times[1:] >= times[:-1])):
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
