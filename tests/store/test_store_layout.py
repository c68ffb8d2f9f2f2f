"""The on-disk layout: exact milliseconds, clustered rows, encodings, version-1 files."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_helpers import T0, http

from perfnb.errors import RecordError
from perfnb.schema import SCHEMA_VERSION, arrow_schema, validate_record
from perfnb.store import Store
from perfnb.store.layout import (
    LAYOUT,
    MS_COLUMNS,
    cluster_order,
    disk_schema,
    legacy_schema,
    table_schema,
)
from perfnb.store.parquet import day_dir

# Beyond float32's reach (16.777217 s, 2.5 h, 31 years, a negative clock skew): the
# store must give each back exactly, to the microsecond.
EXACT = [12.345, 16777.217, 9_000_000.001, 987_654_321_012.345, -0.001, 0.0]


def timed_records(values: list[float]) -> list[dict[str, Any]]:
    return [
        http(i, duration_ms=v, ttfb_ms=v + 1, server_ms=v, app_ms=v, db_ms=v)
        for i, v in enumerate(values)
    ]


def check_exact(frame: pd.DataFrame, values: list[float]) -> None:
    got = frame.sort_values("request_bytes")
    assert got["duration_ms"].dtype == "float64"
    assert got["duration_ms"].tolist() == values  # exact, not approximate
    assert got["ttfb_ms"].tolist() == [round(v + 1, 3) for v in values]


@pytest.mark.parametrize("path", ["records", "writer", "inline writer", "frame"])
def test_milliseconds_come_back_exact_to_the_microsecond(tmp_path: Path, path: str) -> None:
    store = Store(tmp_path)
    records = timed_records(EXACT)
    if path == "records":
        store.append(records)
    elif path == "frame":
        store.append(pd.DataFrame(records).assign(time=lambda f: pd.to_datetime(f["time"])))
    else:
        with store.writer(background=path == "writer") as writer:
            for record in records:
                writer.append(record)
    check_exact(store.read(), EXACT)
    sql = store.sql("SELECT duration_ms FROM events ORDER BY request_bytes")
    assert sql["duration_ms"].tolist() == EXACT


def test_sub_microsecond_parts_round_to_the_microsecond(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append(timed_records([1.2344999, 1.2345001, 7]))
    assert store.read()["duration_ms"].tolist() == [1.234, 1.235, 7.0]


@pytest.mark.parametrize("value", [1e15, -1e15, math.inf, -math.inf, 2e300])
def test_milliseconds_out_of_range_are_refused_by_name(tmp_path: Path, value: float) -> None:
    store = Store(tmp_path)
    with pytest.raises(RecordError, match="'db_ms'"):
        store.append([http(0, db_ms=value)])
    with store.writer() as writer, pytest.raises(RecordError, match="'db_ms'"):
        writer.append(http(0, db_ms=value))
    frame = pd.DataFrame({"time": [T0], "source": ["server"], "kind": ["http"], "db_ms": [value]})
    with pytest.raises(RecordError, match="'db_ms'"):
        store.append(frame)
    with pytest.raises(RecordError, match="'db_ms'"):
        validate_record(http(0, db_ms=value))
    assert store.read().empty


def test_files_hold_decimal_microseconds_with_split_streams_and_statistics(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    store.append(timed_records(EXACT))
    (path,) = store.files()
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.metadata[b"perfnb.schema_version"] == str(SCHEMA_VERSION).encode()
    assert parquet.schema_arrow.metadata[b"perfnb.layout"] == str(LAYOUT).encode()
    assert parquet.schema_arrow.field("duration_ms").type == pa.decimal64(18, 3)
    assert parquet.schema_arrow.field("duration_ms").metadata[b"unit"] == b"ms"
    group = parquet.metadata.row_group(0)
    by_name = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    duration = by_name["duration_ms"]
    assert duration.physical_type == "INT64"
    assert "BYTE_STREAM_SPLIT" in duration.encodings
    assert duration.statistics.has_min_max
    assert float(duration.statistics.max) == max(EXACT)
    assert "BYTE_STREAM_SPLIT" in by_name["request_bytes"].encodings
    assert by_name["time"].statistics.has_min_max
    assert by_name["status"].has_dictionary_page
    # Other engines read the files unaided: milliseconds as a decimal.
    query = "SELECT any_value(typeof(duration_ms)), max(duration_ms)::VARCHAR FROM read_parquet(?)"
    with duckdb.connect() as con:
        kind, top = con.execute(query, [path]).fetchone()  # type: ignore[misc]
    assert (kind, top) == ("DECIMAL(18,3)", "987654321012.345")


def test_rows_run_by_series_within_time_slices() -> None:
    rng = np.random.default_rng(3)
    count = 1000
    routes = pa.array(rng.choice(["/a", "/b", "/c", "/d"], count)).dictionary_encode()
    empty = pa.nulls(count, pa.dictionary(pa.int32(), pa.string()))
    columns = dict.fromkeys(("kind", "service", "name", "method", "source"), empty)
    times = pa.array(np.arange(count), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table({"time": times, **columns, "route": routes})
    order = cluster_order(table, row_group=300)
    assert order is not None
    assert sorted(order) == list(range(count))
    for begin in range(0, count, 300):
        part = order[begin : begin + 300]
        assert set(part) == set(range(begin, min(begin + 300, count)))  # slices stay put
        series = [routes[int(i)].as_py() for i in part]
        runs = sum(1 for a, b in itertools.pairwise(series) if a != b) + 1
        assert runs == len(set(series))  # one run per route…
        for route in set(series):
            rows = [int(i) for i, r in zip(part, series, strict=True) if r == route]
            assert rows == sorted(rows)  # …in time order


def test_reads_return_time_order(tmp_path: Path) -> None:
    store = Store(tmp_path)
    records = [http(i, route=f"/r{i % 5}", at=T0 + timedelta(seconds=i)) for i in range(50)]
    store.append(records[::-1])
    assert store.read()["request_bytes"].tolist() == list(range(50))


def write_first_layout(store: Store, records: list[dict[str, Any]]) -> Path:
    """A file as the store's first layout had them: float32 ms, PLAIN ints, time order."""
    table = pa.Table.from_pylist([validate_record(r) for r in records], schema=legacy_schema())
    day = records[0]["time"].astimezone(UTC).date()
    directory = Path(store.events) / day_dir(day)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "v1-file.parquet"
    schema = arrow_schema().with_metadata({"perfnb.schema_version": "1"})
    pq.write_table(
        table.replace_schema_metadata(schema.metadata),
        path,
        compression="zstd",
        use_dictionary=[f.name for f in legacy_schema() if pa.types.is_dictionary(f.type)],
        column_encoding=dict.fromkeys(MS_COLUMNS, "BYTE_STREAM_SPLIT"),
    )
    return path


def test_files_of_the_first_layout_still_read_query_and_compact(tmp_path: Path) -> None:
    store = Store(tmp_path)
    old = [http(i, duration_ms=1.5 + i) for i in range(10)]
    write_first_layout(store, old)
    store.append(timed_records([20_000.123, 3.25]))
    frame = store.read()
    assert len(frame) == 12
    assert frame["duration_ms"].dtype == "float64"
    assert sorted(frame["duration_ms"]) == sorted([1.5 + i for i in range(10)] + [20_000.123, 3.25])
    fresh = Store(tmp_path)  # no layout cache: footers are read
    counts = fresh.sql("SELECT count(*) AS n, max(duration_ms) AS top FROM events")
    assert (counts["n"][0], counts["top"][0]) == (12, 20_000.123)
    assert fresh.route_summary()["count"].sum() == 12
    result = fresh.compact(T0.date())
    assert (result.files_before, result.files_after, result.rows) == (2, 1, 12)
    (path,) = fresh.files()
    assert pq.read_schema(path).field("duration_ms").type == pa.decimal64(18, 3)
    assert sorted(fresh.read()["duration_ms"]) == sorted(frame["duration_ms"])


def test_schemas_agree_but_for_milliseconds() -> None:
    memory, disk, old = table_schema(), disk_schema(), legacy_schema()
    assert memory.names == disk.names == old.names == arrow_schema().names
    for field in arrow_schema():
        if field.name in MS_COLUMNS:
            assert memory.field(field.name).type == pa.float64()
            assert field.metadata == disk.field(field.name).metadata
        else:
            assert memory.field(field.name).type == field.type == disk.field(field.name).type


def test_offset_times_pandas_stamps_and_int_milliseconds_normalise(tmp_path: Path) -> None:
    plus_two = datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    stamp = pd.Timestamp("2026-03-01 12:00:00.000001", tz="UTC")
    store = Store(tmp_path)
    store.append([http(0, at=plus_two), http(1, at=stamp), http(2, duration_ms=3)])
    frame = store.read()
    assert frame["time"].tolist()[:2] == [pd.Timestamp("2026-03-01 12:00", tz="UTC"), stamp]
    assert frame["duration_ms"].tolist()[2] == 3.0
