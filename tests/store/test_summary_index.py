"""The month indexes of daily summaries: used while they match the day files, never trusted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from store_helpers import T0, http

from perfnb.errors import StoreError
from perfnb.store import Store
from perfnb.store.summaries import read_summary, write_summary
from perfnb.store.summary_index import index_path, read_index

FS = pafs.LocalFileSystem()
#: Four days across a month's end, so the store has two month indexes.
DAYS = [date(2026, 3, 30) + timedelta(days=n) for n in range(4)]
TODAY = date(2026, 4, 10)


def make_store(root: Path) -> Store:
    store = Store(root)
    for n, day in enumerate(DAYS):
        at = datetime.combine(day, T0.timetz())
        store.append(
            [http(i, at=at + timedelta(seconds=i), duration_ms=1.0 + i + n) for i in range(60 + n)]
        )
    store.close_days(today=TODAY)
    return store


def rows(root: Path, *, indexed: bool = True) -> pd.DataFrame:
    """All summary rows, read by a freshly opened store."""
    store = Store(root)
    store._history.indexed = indexed
    frame = store.summaries(include_load=True, sketches=True)
    return frame.sort_values(["date", "route"]).reset_index(drop=True)


def stamp(root: Path, day: date) -> tuple[int, int]:
    info = os.stat(root / "daily" / f"date={day}" / "summary.parquet")
    return (info.st_mtime_ns, info.st_size)


def indexed_days(root: Path) -> dict[date, pa.Table]:
    """The days whose index entries match their summary files now."""
    out = {}
    for month in {day.replace(day=1) for day in DAYS}:
        wanted = {
            d: stamp(root, d)
            for d in DAYS
            if d.replace(day=1) == month
            and (root / "daily" / f"date={d}" / "summary.parquet").exists()
        }
        found = read_index(FS, str(root), month, wanted)
        out.update({day: entry.table for day, entry in found.items()})
    return out


def counts(frame: pd.DataFrame, day: date) -> dict[str, int]:
    of_day = frame[frame["date"] == day]
    return dict(zip(of_day["route"], of_day["count"], strict=True))


def test_closing_days_indexes_each_month_with_the_day_files_rows(tmp_path: Path) -> None:
    make_store(tmp_path)
    assert sorted(p.name for p in (tmp_path / "daily" / "_index").iterdir()) == [
        "2026-03.arrow",
        "2026-04.arrow",
    ]
    entries = indexed_days(tmp_path)
    assert sorted(entries) == DAYS
    for day, table in entries.items():
        stored, _ = read_summary(FS, str(tmp_path / "daily" / f"date={day}" / "summary.parquet"))
        assert table.equals(stored)
    assert rows(tmp_path).equals(rows(tmp_path, indexed=False))


def test_a_cold_read_takes_its_rows_from_the_index(tmp_path: Path) -> None:
    make_store(tmp_path)
    expected = rows(tmp_path, indexed=False)
    # Garbage of the same size and mtime: only a read that skips the file survives it.
    path = tmp_path / "daily" / f"date={DAYS[1]}" / "summary.parquet"
    before = os.stat(path)
    path.write_bytes(b"\0" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert rows(tmp_path).equals(expected)
    with pytest.raises(StoreError, match="cannot read the summary"):
        rows(tmp_path, indexed=False)


def test_a_day_file_rewritten_behind_the_index_is_read_from_the_file(tmp_path: Path) -> None:
    make_store(tmp_path)
    expected = rows(tmp_path)
    day = DAYS[2]
    directory = tmp_path / "daily" / f"date={day}"
    table, sources = read_summary(FS, str(directory / "summary.parquet"))
    doubled = table.set_column(
        table.schema.get_field_index("count"), "count", pa.compute.multiply(table["count"], 2)
    )
    # Written the way another tool (or an older perfnb) would: the index is not told.
    write_summary(FS, str(directory), doubled, day=day, sources=sources, local=True)
    assert day not in indexed_days(tmp_path)

    found = rows(tmp_path)
    assert counts(found, day) == {k: 2 * v for k, v in counts(expected, day).items()}
    for other in DAYS[:2] + DAYS[3:]:
        assert counts(found, other) == counts(expected, other)
    assert indexed_days(tmp_path)[day]["count"].to_pylist() == doubled["count"].to_pylist()
    assert found.equals(rows(tmp_path, indexed=False))


def test_detail_added_to_a_closed_day_is_summarised_again_and_indexed(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    day = DAYS[0]
    before = sum(counts(rows(tmp_path), day).values())
    store.append([http(1000 + i, at=datetime.combine(day, T0.timetz())) for i in range(7)])
    after = rows(tmp_path)
    assert sum(counts(after, day).values()) == before + 7
    assert sum(indexed_days(tmp_path)[day]["count"].to_pylist()) == before + 7
    assert after.equals(rows(tmp_path, indexed=False))


def test_summarize_rewrites_the_index_of_its_month(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    day = DAYS[3]
    store.append([http(2000 + i, at=datetime.combine(day, T0.timetz())) for i in range(5)])
    written = store.summarize(day)
    assert sum(indexed_days(tmp_path)[day]["count"].to_pylist()) == written.records
    assert sorted(indexed_days(tmp_path)) == DAYS


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty", "foreign", "fewer batches"],
)
def test_a_corrupt_index_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    make_store(tmp_path)
    expected = rows(tmp_path, indexed=False)
    path = Path(index_path(str(tmp_path), DAYS[-1]))
    content = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(content)))
    elif damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":  # a valid Arrow file, not an index
        with (
            pa.OSFile(str(path), "wb") as sink,
            pa.ipc.new_file(sink, pa.schema([("x", pa.int64())])) as w,
        ):
            w.write_table(pa.table({"x": [1, 2]}))
    else:  # the listed days and the stored batches disagree
        table = pa.ipc.open_file(pa.BufferReader(content)).read_all()
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.slice(0, 0))
    assert rows(tmp_path).equals(expected)
    assert sorted(indexed_days(tmp_path)) == DAYS  # rewritten by that read


def test_a_missing_index_is_rebuilt_by_the_next_read(tmp_path: Path) -> None:
    make_store(tmp_path)
    expected = rows(tmp_path)
    for path in (tmp_path / "daily" / "_index").iterdir():
        path.unlink()
    assert rows(tmp_path).equals(expected)
    assert sorted(indexed_days(tmp_path)) == DAYS


def test_retention_leaves_the_index_holding_only_kept_summaries(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    # Keep summaries of the last 10 days before TODAY: March's days go.
    result = store.retention(detail_days=1, summary_days=10, today=TODAY).apply()
    assert set(result.deleted_summaries) == {DAYS[0], DAYS[1]}
    assert not Path(index_path(str(tmp_path), DAYS[0])).exists()
    assert sorted(indexed_days(tmp_path)) == DAYS[2:]
    assert rows(tmp_path).equals(rows(tmp_path, indexed=False))


@pytest.mark.slow
def test_concurrent_writers_never_make_a_read_wrong(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_store(root)
    day = DAYS[2]
    directory = root / "daily" / f"date={day}"
    table, sources = read_summary(FS, str(directory / "summary.parquet"))
    doubled = table.set_column(
        table.schema.get_field_index("count"), "count", pa.compute.multiply(table["count"], 2)
    )
    variants = []
    for name, variant in (("a", table), ("b", doubled)):
        write_summary(FS, str(tmp_path / name), variant, day=day, sources=sources, local=True)
        variants.append(str(tmp_path / name / "summary.parquet"))
    expected = [
        dict(zip(t["route"].to_pylist(), t["count"].to_pylist(), strict=True))
        for t in (table, doubled)
    ]
    writer = Path(__file__).with_name("summary_index_writer.py")
    children = [
        subprocess.Popen(
            [sys.executable, str(writer), str(root), day.isoformat(), "60", *order],
            stdout=subprocess.PIPE,
            text=True,
        )
        for order in (variants, variants[::-1])
    ]
    reads = 0
    deadline = time.monotonic() + 50
    while any(child.poll() is None for child in children) or reads < 5:
        assert time.monotonic() < deadline, "the writers did not finish"
        seen = counts(rows(root), day)
        assert seen in expected, seen
        reads += 1
    for child in children:
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 0
        assert out.strip() == "done"
    final, _ = read_summary(FS, str(directory / "summary.parquet"))
    truth = dict(zip(final["route"].to_pylist(), final["count"].to_pylist(), strict=True))
    assert counts(rows(root), day) == truth
    assert indexed_days(root)[day]["count"].to_pylist() == final["count"].to_pylist()
