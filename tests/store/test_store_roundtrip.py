"""Round trips through real Parquet files: every column type, days, filters, SQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from store_helpers import T0, http

from perfnb.schema import COLUMN_NAMES, SCHEMA_VERSION
from perfnb.store import Store

EVERY_COLUMN: dict[str, Any] = {
    "time": datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
    "source": "client",
    "kind": "http",
    "service": "shop",
    "route": "/api/cards/{card_id}",
    "method": "POST",
    "status": 503,
    "duration_ms": 12.345,
    "ttfb_ms": 10.5,
    "request_bytes": 2**40,
    "response_bytes": 0,
    "server_ms": 9.25,
    "app_ms": 8.0,
    "db_ms": 3.5,
    "messages_in": 2**31 - 1,
    "messages_out": -5,
    "error_type": "HTTPStatusError",
    "error_message": "Service Unavailable — ünïcode",
    "run_id": "run-1",
    "client": "c0ffee",
    "name": "LCP",
    "value": 1234.5678901234,
    "unit": "ms",
    "tags": {"region": "eu", "build": "42"},
}


def test_every_column_round_trips_through_records(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.append([EVERY_COLUMN]) == 1
    frame = store.read(include_load=True)
    assert list(frame.columns) == list(COLUMN_NAMES)
    row = frame.iloc[0]
    assert row["time"] == pd.Timestamp("2026-03-01 12:30:15.123456", tz="UTC")
    assert str(frame["time"].dtype) == "datetime64[us, UTC]"
    assert frame["route"].dtype == "category"
    assert frame["status"].dtype == "Int16"
    for name, value in EVERY_COLUMN.items():
        if name == "time":
            continue
        got = row[name]
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-6), name
        else:
            assert got == value, name


def test_every_column_round_trips_through_a_frame(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append([EVERY_COLUMN, http(1)])
    first = store.read(include_load=True)
    again = Store(tmp_path / "copy")
    assert again.append(first) == 2
    second = again.read(include_load=True)
    pd.testing.assert_frame_equal(first, second)


def test_missing_values_read_back_as_null(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append([{"time": T0, "source": "perfnb", "kind": "process", "status": None}])
    row = store.read().iloc[0]
    assert pd.isna(row["status"])
    assert pd.isna(row["duration_ms"])
    assert pd.isna(row["route"])


def test_batch_spanning_midnight_is_split_into_both_days(tmp_path: Path) -> None:
    store = Store(tmp_path)
    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    batch = [http(i, at=midnight + timedelta(seconds=i - 5)) for i in range(10)]
    assert store.append(batch) == 10
    assert store.days() == [date(2026, 3, 1), date(2026, 3, 2)]
    first = store.read(end=midnight)
    second = store.read(start=midnight)
    assert sorted(first["request_bytes"]) == [0, 1, 2, 3, 4]
    assert sorted(second["request_bytes"]) == [5, 6, 7, 8, 9]
    for path in store.files():
        day = Path(path).parent.name.removeprefix("date=")
        times = pq.read_table(path).column("time").to_pylist()
        assert {t.date().isoformat() for t in times} == {day}


def test_files_carry_the_schema_and_its_version(tmp_path: Path, records: list[Any]) -> None:
    store = Store(tmp_path)
    store.append(records)
    (path,) = store.files()
    assert Path(path).parent.parent == tmp_path / "events"
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.metadata[b"perfnb.schema_version"] == str(SCHEMA_VERSION).encode()
    column = parquet.metadata.row_group(0).column(0)
    assert column.path_in_schema == "time"
    assert "DELTA_BINARY_PACKED" in column.encodings
    assert column.compression == "ZSTD"


def test_appends_never_overwrite(tmp_path: Path, records: list[Any]) -> None:
    store = Store(tmp_path)
    store.append(records)
    store.append(records)
    assert len(store.files()) == 2
    assert len(store.read()) == 200


def test_read_filters_and_prunes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append([http(i, at=T0 + timedelta(days=i % 3)) for i in range(30)])
    store.append([http(100, run_id="load-1")])
    assert len(store.read()) == 30
    assert len(store.read(include_load=True)) == 31
    assert len(store.read(run_ids=["load-1"])) == 1
    assert len(store.read(routes=["/api/items/{item_id}/0"])) == 10
    assert len(store.read(T0 + timedelta(days=1), T0 + timedelta(days=2))) == 10
    assert len(store.files("2026-03-02", "2026-03-03")) == 1
    assert len(store.read(sources=["client"])) == 0
    frame = store.read(columns=["route", "status"])
    assert list(frame.columns) == ["route", "status"]
    assert frame.shape == (30, 2)


def test_sql_and_route_summary(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append([http(i, status=500 if i % 10 == 0 else 200) for i in range(100)])
    counts = store.sql("SELECT date, count(*) AS n FROM events GROUP BY date")
    assert counts["n"].tolist() == [100]
    assert str(counts["date"][0])[:10] == "2026-03-01"
    one = store.sql("SELECT count(*) AS n FROM events WHERE request_bytes < ?", [10])
    assert one["n"][0] == 10
    summary = store.route_summary("2026-03-01", "2026-03-02")
    assert summary["count"].sum() == 100
    assert summary["errors"].sum() == 10
    assert set(summary.columns) >= {"route", "error_rate", "p50_ms", "p99_ms", "max_ms"}
    assert summary["max_ms"].max() == pytest.approx(7.5)
    daily = store.route_summary(daily=True)
    assert len(daily) == 3
    partial = store.route_summary(T0 + timedelta(milliseconds=50), T0 + timedelta(milliseconds=80))
    assert partial["count"].sum() == 30
    assert store.route_summary(kinds=["vital"]).empty


def test_file_uri_root(tmp_path: Path, records: list[Any]) -> None:
    store = Store(tmp_path.as_uri())
    store.append(records)
    with store.writer() as writer:
        writer.extend(records)
    assert len(Store(tmp_path).read()) == 200
    assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == 200


def test_empty_store_reads_empty(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.days() == []
    assert store.read().empty
    assert store.route_summary().empty


def test_non_local_filesystem_keeps_its_log_locally(tmp_path: Path, records: list[Any]) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    # Any pyarrow filesystem that is not the local one takes the generic path.
    fs = pafs.SubTreeFileSystem(str(remote), pafs.LocalFileSystem())
    store = Store("bucket/perfnb", filesystem=fs, wal_dir=tmp_path / "wal")
    assert not store.local
    store.append(records[:50])
    with store.writer() as writer:
        writer.extend(records[50:])
        assert list((tmp_path / "wal").glob("*.log"))
    assert len(store.read()) == 100
    assert store.sql("SELECT count(*) AS n, min(date) AS d FROM events")["n"][0] == 100
    assert store.route_summary()["count"].sum() == 100
    assert len(list((remote / "bucket" / "perfnb" / "events").rglob("*.parquet"))) == 2
