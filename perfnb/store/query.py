"""Reading the store: time ranges, filtered reads into pandas, and DuckDB over the files.

Reads take the list of data files from the store (already pruned to the days
asked for, and without files a compaction replaced), so neither pyarrow nor
DuckDB ever sees a half-finished compaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from perfnb.errors import StoreError
from perfnb.schema import COLUMN_NAMES, arrow_schema

__all__ = ["TimeLike", "connect", "read_files", "to_utc"]

TimeLike = datetime | date | str | None

_NULLABLE_INTS: Final = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def to_utc(value: TimeLike, *, name: str) -> datetime | None:
    """``value`` as an aware UTC datetime; a date is its midnight UTC; ``None`` stays."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            if len(value) == 10:  # a bare date means its midnight UTC
                value = date.fromisoformat(value)
            else:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            msg = f"{name}: got {value!r}; expected an ISO 8601 date or time with an offset"
            raise StoreError(msg) from None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise StoreError(f"{name}: got naive {value!r}; give a timezone (UTC)")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise StoreError(f"{name}: got {value!r} ({type(value).__name__}); expected a datetime or date")


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A frame with no rows and the dtypes a read would give."""
    return _to_pandas(arrow_schema().empty_table().select(list(columns)))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas(types_mapper=_NULLABLE_INTS.get, maps_as_pydicts="strict")
    return frame


def check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(COLUMN_NAMES)
    unknown = [c for c in columns if c not in COLUMN_NAMES]
    if unknown:
        raise StoreError(f"columns: unknown {unknown[0]!r}; columns are: {', '.join(COLUMN_NAMES)}")
    return list(columns)


def read_files(
    fs: pafs.FileSystem,
    files: list[str],
    *,
    start: datetime | None,
    end: datetime | None,
    filters: dict[str, Sequence[str] | None],
    include_load: bool,
    columns: list[str],
) -> pd.DataFrame:
    """Rows of ``files`` matching the filters, in time order, as pandas."""
    if not files:
        return empty_frame(columns)
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
    dataset = ds.dataset(files, schema=arrow_schema(), format="parquet", filesystem=fs)
    wanted = columns if "time" in columns else [*columns, "time"]
    table = dataset.to_table(columns=wanted, filter=condition)
    if table.num_rows > 1:
        table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
    return _to_pandas(table.select(columns))


def connect(fs: pafs.FileSystem, files: list[str], *, local: bool) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (time zone UTC) with a view ``events`` over ``files``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if files and local:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        scan = f"read_parquet([{listed}], hive_partitioning = true)"
        con.execute(f"CREATE VIEW events AS SELECT * FROM {scan}")
        return con
    # Other filesystems (and the empty store) go through Arrow, which DuckDB scans
    # with filter pushdown; the `date` column is rebuilt from the partition path.
    schema = arrow_schema().append(pa.field("date", pa.date32()))
    if files:
        partitioning = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
        data: Any = ds.dataset(
            files,
            schema=schema,
            format="parquet",
            filesystem=fs,
            partitioning=partitioning,
            partition_base_dir=_base(files),
        )
    else:
        data = schema.empty_table()
    con.register("events_arrow", data)
    con.execute("CREATE VIEW events AS SELECT * FROM events_arrow")
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
