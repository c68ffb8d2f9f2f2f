"""Compaction: one file per closed day, every row kept, safe to interrupt."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from store_helpers import T0, http

from perfnb.errors import StoreError
from perfnb.store import Store
from perfnb.store.compact import INTENT

DAY = date(2026, 3, 1)


def filled(tmp_path: Path) -> Store:
    store = Store(tmp_path)
    for batch in range(5):
        store.append(
            [http(batch * 100 + i, at=T0 + timedelta(seconds=i * 5 - batch)) for i in range(100)]
        )
    with store.writer(flush_every=50) as writer:
        writer.extend(http(1000 + i) for i in range(120))
    return store


def test_compaction_keeps_every_row_in_one_file(tmp_path: Path) -> None:
    store = filled(tmp_path)
    before = store.read()
    assert len(store.files()) > 5
    result = store.compact(DAY)
    assert (result.files_before, result.files_after, result.rows) == (8, 1, len(before))
    (path,) = store.files()
    assert len(list(Path(path).parent.glob("*"))) == 1
    after = store.read()
    assert sorted(after["request_bytes"]) == sorted(before["request_bytes"])
    # In the file rows run by series (route here), each in time order; reads sort by time.
    stored = pq.read_table(path).to_pandas()
    assert stored["route"].nunique() == 3
    for _, series in stored.groupby("route", observed=True):
        assert series["time"].is_monotonic_increasing
    assert (stored["route"] != stored["route"].shift()).sum() == 3
    assert after["time"].is_monotonic_increasing
    assert store.compact(DAY).files_before == 1  # nothing left to do


def test_today_is_refused_unless_forced(tmp_path: Path) -> None:
    store = Store(tmp_path)
    now = datetime.now(UTC)
    store.append([http(1, at=now), http(2, at=now)])
    store.append([http(3, at=now)])
    with pytest.raises(StoreError, match="not closed"):
        store.compact(now.date())
    assert store.compact(now.date().isoformat(), force=True).files_after == 1


def test_interrupted_after_rename_reads_each_row_once_and_is_finished_on_open(
    tmp_path: Path,
) -> None:
    store = filled(tmp_path)
    directory = tmp_path / "events" / "date=2026-03-01"
    sources = sorted(p.name for p in directory.glob("*.parquet"))
    saved = tmp_path / "saved"
    shutil.copytree(directory, saved)
    result = store.compact(DAY)
    (merged,) = directory.glob("*.parquet")
    # Put back the state of a crash between naming the merged file and deleting sources.
    for name in sources:
        shutil.copyfile(saved / name, directory / name)
    intent = {"target": merged.name, "sources": sources, "pid": 0, "host": "gone"}
    (directory / INTENT).write_text(json.dumps(intent))
    assert len(store.read()) == result.rows
    assert store.sql("SELECT count(*) AS n FROM events")["n"][0] == result.rows
    Store(tmp_path)  # opening finishes the compaction
    assert sorted(p.name for p in directory.iterdir()) == [merged.name]


def test_interrupted_before_rename_keeps_the_sources(tmp_path: Path) -> None:
    store = filled(tmp_path)
    directory = tmp_path / "events" / "date=2026-03-01"
    intent = {"target": "c-never-named.parquet", "sources": ["x.parquet"], "pid": 0}
    (directory / INTENT).write_text(json.dumps(intent))
    assert len(store.read()) == 620
    Store(tmp_path)
    assert not (directory / INTENT).exists()
    assert Store(tmp_path).compact(DAY).rows == 620
