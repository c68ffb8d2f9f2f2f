"""Bad records are refused with errors that name the column; nothing is half-written."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from store_helpers import T0, http

from perfnb.errors import RecordError, StoreError
from perfnb.store import Store

BAD_RECORDS = [
    ({"colour": "red"}, "colour"),
    ({"time": datetime(2026, 3, 1, 12)}, "time"),
    ({"status": "200"}, "status"),
    ({"status": 70_000}, "status"),
    ({"duration_ms": float("nan")}, "duration_ms"),
    ({"duration_ms": True}, "duration_ms"),
    ({"route": 5}, "route"),
    ({"source": "martian"}, "source"),
    ({"tags": {"k": 1}}, "tags"),
]


@pytest.mark.parametrize(("change", "column"), BAD_RECORDS)
def test_append_names_the_bad_column(tmp_path: Path, change: dict[str, Any], column: str) -> None:
    store = Store(tmp_path)
    with pytest.raises(RecordError, match=f"'{column}'") as info:
        store.append([http(0), http(1, **change)])
    assert "record 1" in str(info.value)
    assert store.files() == []


@pytest.mark.parametrize(("change", "column"), BAD_RECORDS)
def test_writer_names_the_bad_column(tmp_path: Path, change: dict[str, Any], column: str) -> None:
    with Store(tmp_path).writer() as writer:
        writer.append(http(0))
        with pytest.raises(RecordError, match=f"'{column}'"):
            writer.append(http(1, **change))
        writer.append(http(2))
    assert sorted(Store(tmp_path).read()["request_bytes"]) == [0, 2]


def test_missing_required_column(tmp_path: Path) -> None:
    record = http(0)
    del record["kind"]
    with pytest.raises(RecordError, match="'kind'"):
        Store(tmp_path).append([record])


def frame(**columns: Any) -> pd.DataFrame:
    base: dict[str, Any] = {
        "time": pd.to_datetime([T0, T0], utc=True),
        "source": ["server", "client"],
        "kind": ["http", "http"],
        "status": [200, 404],
    }
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("columns", "column", "sample"),
    [
        ({"colour": ["red", "blue"]}, "colour", "red"),
        ({"time": pd.to_datetime(["2026-03-01", "2026-03-02"])}, "time", "2026-03-01"),
        ({"status": ["ok", "fine"]}, "status", "ok"),
        ({"status": [200, 70_000]}, "status", "70000"),
        ({"status": [200.5, 1.0]}, "status", "200.5"),
        ({"duration_ms": [True, False]}, "duration_ms", "bool"),
        ({"route": ["/", 7]}, "route", "7"),
        ({"kind": ["http", "telepathy"]}, "kind", "telepathy"),
        ({"source": pd.Categorical(["server", "alien"])}, "source", "alien"),
    ],
)
def test_frame_checked_column_by_column(
    tmp_path: Path, columns: dict[str, Any], column: str, sample: str
) -> None:
    with pytest.raises(RecordError, match=f"'{column}'") as info:
        Store(tmp_path).append(frame(**columns))
    assert sample in str(info.value)


def test_frame_nan_is_null_and_nullable_ints_pass(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append(frame(duration_ms=[np.nan, 2.5], status=pd.array([None, 404], dtype="Int64")))
    got = store.read()
    assert got["duration_ms"].isna().tolist() == [True, False]
    assert got["status"].isna().tolist() == [True, False]


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="start"):
        store.read(datetime(2026, 3, 1))
    with pytest.raises(StoreError, match="columns"):
        store.read(columns=["nope"])
    with pytest.raises(StoreError, match="flush_every"):
        store.writer(flush_every=0)
    with pytest.raises(StoreError, match="sql"):
        store.sql("SELECT nope FROM events")
