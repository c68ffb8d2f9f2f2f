"""Reading the store: time ranges, filtered reads into pandas, and DuckDB over the files.

Reads take the list of data files from the store (already pruned to the days
asked for, and without files a compaction replaced), so neither pyarrow nor
DuckDB ever sees a half-finished compaction. Files of the current layout and of
the first one (``*_ms`` as float32) are scanned apart, each with its own schema,
and meet as the store's in-memory form: ``*_ms`` as float64 (``DOUBLE`` in DuckDB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from perfnb import times
from perfnb.errors import StoreError
from perfnb.frames import frame_from_arrow
from perfnb.schema import COLUMN_NAMES
from perfnb.store.layout import (
    MS_COLUMNS,
    disk_schema,
    from_disk,
    is_current,
    legacy_schema,
    table_schema,
)
from perfnb.times import TimeLike

__all__ = ["TimeLike", "connect", "read_files", "read_table", "table_to_frame", "to_utc"]


def to_utc(value: TimeLike, *, name: str) -> datetime | None:
    """``value`` as an aware UTC datetime (:func:`perfnb.times.to_utc`), or a StoreError."""
    return times.to_utc(value, name=name, error=StoreError)


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A frame with no rows and the dtypes a read would give."""
    return _to_pandas(table_schema().empty_table().select(list(columns)))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # The live stream's conversion, so stored and live frames share their dtypes.
    return frame_from_arrow(table)


def check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(COLUMN_NAMES)
    unknown = [c for c in columns if c not in COLUMN_NAMES]
    if unknown:
        raise StoreError(f"columns: unknown {unknown[0]!r}; columns are: {', '.join(COLUMN_NAMES)}")
    return list(columns)


def by_layout(
    fs: pafs.FileSystem, files: list[str], known: dict[str, bool]
) -> list[tuple[pa.Schema, list[str]]]:
    """``files`` grouped by layout, each group with the schema to scan it with.

    ``known`` caches each file's layout (files never change once named); a file not
    in it has its footer read once.
    """
    current: list[str] = []
    old: list[str] = []
    for path in files:
        found = known.get(path)
        if found is None:
            try:
                found = is_current(pq.read_schema(path, filesystem=fs))
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(f"cannot read the schema of {path!r}: {exc}") from exc
            known[path] = found
        (current if found else old).append(path)
    groups = [(disk_schema(), current), (legacy_schema(), old)]
    return [(schema, paths) for schema, paths in groups if paths]


def read_files(
    fs: pafs.FileSystem,
    files: list[str],
    known: dict[str, bool],
    *,
    start: datetime | None,
    end: datetime | None,
    filters: dict[str, Sequence[str] | None],
    include_load: bool,
    columns: list[str],
    sizes: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Rows of ``files`` matching the filters, in time order, as pandas.

    ``sizes`` (each file's size, from a listing) spares a request per file in
    object storage.
    """
    if not files:
        return empty_frame(columns)
    table = read_table(
        fs,
        files,
        known,
        start=start,
        end=end,
        filters=filters,
        include_load=include_load,
        columns=columns,
        sizes=sizes,
    )
    return table_to_frame(table, columns)


def table_to_frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    """Rows read by :func:`read_table` (from one or more calls) in time order, as pandas."""
    # Files keep rows clustered by series, not in time order: sort here.
    if table.num_rows > 1:
        table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
    return _to_pandas(table.select(columns))


def read_table(
    fs: pafs.FileSystem,
    files: list[str],
    known: dict[str, bool],
    *,
    start: datetime | None,
    end: datetime | None,
    filters: dict[str, Sequence[str] | None],
    include_load: bool,
    columns: list[str],
    sizes: Mapping[str, int] | None = None,
) -> pa.Table:
    """Rows of ``files`` (at least one) matching the filters, with ``time``, in file order."""
    condition = pc.scalar(True)
    stamp = pa.timestamp("us", tz="UTC")
    if start is not None:
        condition &= pc.field("time") >= pa.scalar(start, stamp)
    if end is not None:
        condition &= pc.field("time") < pa.scalar(end, stamp)
    for column, values in filters.items():
        if values is not None:
            if isinstance(values, str):
                values = [values]
            condition &= pc.field(column).isin(pa.array(list(values), pa.string()))
    if not include_load:
        condition &= pc.field("run_id").is_null()
    wanted = columns if "time" in columns else [*columns, "time"]
    parts = []
    for schema, paths in by_layout(fs, files, known):
        if sizes is None:
            dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)
        else:
            # Sizes known: no request per file (pyarrow stats paths one by one) first.
            parquet = ds.ParquetFileFormat()
            fragments = [parquet.make_fragment(p, fs, file_size=sizes[p]) for p in paths]
            dataset = ds.FileSystemDataset(fragments, schema, parquet, fs)
        parts.append(from_disk(dataset.to_table(columns=wanted, filter=condition)))
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


#: The ``*_ms`` columns as DOUBLE, whatever their type in the files.
_AS_DOUBLE: Final = ", ".join(f'CAST("{name}" AS DOUBLE) AS "{name}"' for name in MS_COLUMNS)


def connect(
    fs: pafs.FileSystem, files: list[str], known: dict[str, bool], *, local: bool
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (time zone UTC) with a view ``events`` over ``files``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    scans = []
    for number, (schema, paths) in enumerate(by_layout(fs, files, known) if files else []):
        if local:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in paths)
            scans.append(f"read_parquet([{listed}], hive_partitioning = true)")
            continue
        # Other filesystems go through Arrow, which DuckDB scans with filter
        # pushdown; the `date` column is rebuilt from the partition path.
        partitioning = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
        dataset = ds.dataset(
            paths,
            schema=schema.append(pa.field("date", pa.date32())),
            format="parquet",
            filesystem=fs,
            partitioning=partitioning,
            partition_base_dir=_base(paths),
        )
        con.register(f"events_{number}", dataset)
        scans.append(f"events_{number}")
    if not scans:
        empty: Any = table_schema().append(pa.field("date", pa.date32())).empty_table()
        con.register("events_empty", empty)
        scans.append("events_empty")
    # Each layout is scanned with its own types; both meet as DOUBLE milliseconds.
    selects = [f"SELECT * REPLACE ({_AS_DOUBLE}) FROM {scan}" for scan in scans]
    con.execute("CREATE VIEW events AS " + " UNION ALL BY NAME ".join(selects))
    return con


def _base(files: list[str]) -> str:
    first = files[0]
    return first[: first.rfind("/date=")]


SUMMARY_SQL: Final = """
SELECT {keys},
       count(*) AS count,
       count(*) FILTER (WHERE error_type IS NOT NULL OR status >= 500) AS errors,
       errors / count(*) AS error_rate,
       quantile_cont(duration_ms, [0.5, 0.9, 0.95, 0.99]) AS q,
       max(duration_ms) AS max_ms
FROM events
WHERE {where}
GROUP BY ALL
"""


def summary_sql(*, daily: bool, where: list[str]) -> str:
    """The per-route (and per-day) summary query over the view ``events``."""
    keys = "date, route" if daily else "route"
    body = SUMMARY_SQL.format(keys=keys, where=" AND ".join(where) or "true")
    order = "date, count DESC, route" if daily else "count DESC, route"
    return (
        f"SELECT {keys}, count, errors, error_rate, q[1] AS p50_ms, q[2] AS p90_ms, "
        f"q[3] AS p95_ms, q[4] AS p99_ms, max_ms FROM ({body}) ORDER BY {order}"
    )
