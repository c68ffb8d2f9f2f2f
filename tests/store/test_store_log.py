"""The append log's row format: torn appends, full segments, shapes, the converter thread."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from store_helpers import T0, http

from perfnb.errors import RecordError
from perfnb.store import Store, StoreWriter
from perfnb.store.rows import ROW_BYTES, ROWS_START
from perfnb.store.wal import _frames


def abandon(writer: StoreWriter) -> Path:
    """Leave the writer's live segment behind as a killed process would; its path."""
    segment = writer._segment
    assert segment is not None
    segment.close(delete=False)
    writer._segment = None
    return segment.path


def test_a_torn_row_or_frame_ends_the_log(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.writer(flush_every=10_000, flush_seconds=3600)
    for i in range(20):
        writer.append(http(i))
    writer.append(http(20, route="/brand/new"))  # frames a new string, then its row
    path = abandon(writer)
    data = bytearray(path.read_bytes())
    last_row = ROWS_START + 20 * ROW_BYTES
    assert data[last_row : last_row + 2] != b"\0\0"
    data[last_row : last_row + 2] = b"\0\0"  # killed before the tag: row 20 uncommitted
    # ... and before the type of its string's frame was written.
    frames, back = _frames(bytes(data))
    assert frames[-1][2] == b"/brand/new"  # frames grow downwards from the end
    header = back + len(b"/brand/new")
    data[header + 6 : header + 8] = b"\0\0"
    path.write_bytes(bytes(data))
    again = Store(tmp_path)
    assert again.recovered == 20
    assert sorted(again.read()["request_bytes"]) == list(range(20))


def test_full_segments_roll_over_without_losing_a_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    big = Store(tmp_path / "src")
    big.append([http(10_000 + i, error_message="x" * 200) for i in range(600)])
    batch = big.read()
    writer = StoreWriter(
        store._write_days, store.wal_dir, flush_every=1_000_000, segment_bytes=64 * 1024
    )
    with writer:
        for i in range(3000):
            # Unique strings fill the frame area; rows fill the other end.
            writer.append(http(i, error_message=f"failure number {i}", client=f"c{i % 7}"))
        writer.extend(batch)  # larger than a segment: written straight away
    frame = store.read()
    assert sorted(frame["request_bytes"]) == [*range(3000), *range(10_000, 10_600)]
    messages = frame.set_index("request_bytes")["error_message"]
    assert messages[2999] == "failure number 2999"
    assert len(store.files()) > 5
    assert list(store.wal_dir.glob("*")) == []


def test_hundreds_of_key_orders_are_all_stored(tmp_path: Path) -> None:
    rng = random.Random(5)
    optional = ["service", "route", "method", "status", "duration_ms", "client", "tags"]
    records = []
    for i in range(600):
        keys = ["time", "source", "kind", *rng.sample(optional, rng.randint(0, len(optional)))]
        rng.shuffle(keys)
        full = http(i, client="k", tags={"n": str(i)})
        records.append({k: full[k] for k in keys} | {"request_bytes": i})
    store = Store(tmp_path)
    with store.writer() as writer:
        for record in records[:300]:
            writer.append(record)
    store.append(records[300:])
    frame = store.read().set_index("request_bytes")
    assert sorted(frame.index) == list(range(600))
    for record in records[::37]:
        row = frame.loc[record["request_bytes"]]
        for key in set(record) - {"time", "request_bytes"}:
            assert row[key] == record[key], key


@pytest.mark.parametrize(
    ("change", "column"),
    [({"route": "bad \ud800 text"}, "route"), ({"tags": {"k": "\udcff"}}, "tags")],
)
def test_text_that_is_not_unicode_is_refused_by_name(
    tmp_path: Path, change: dict[str, Any], column: str
) -> None:
    store = Store(tmp_path)
    with pytest.raises(RecordError, match=f"'{column}'"):
        store.append([http(0), http(1, **change)])
    with store.writer() as writer:
        with pytest.raises(RecordError, match=f"'{column}'"):
            writer.append(http(1, **change))
        writer.append(http(2))
    assert store.read()["request_bytes"].tolist() == [2]


@pytest.mark.parametrize("record", [None, 5, [("time", T0)], "record"])
def test_what_is_not_a_record_is_refused(tmp_path: Path, record: Any) -> None:
    with Store(tmp_path).writer() as writer:
        with pytest.raises(RecordError, match="must be a dict"):
            writer.append(record)
        with pytest.raises(RecordError, match="record 1"):
            writer.extend([http(0), record])
    assert len(Store(tmp_path).read()) == 1


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_conversion_keeps_the_records_and_is_retried(
    tmp_path: Path, background: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path)
    failures = itertools.count()

    def flaky(table: pa.Table, name: str) -> int:
        if next(failures) < 1:
            raise OSError("disk full")
        return store._write_days(table, name)

    writer = StoreWriter(flaky, store.wal_dir, flush_every=10, background=background)
    with caplog.at_level(logging.ERROR, logger="perfnb.store"):
        for i in range(25):  # the first seal fails; a later one retries it
            try:
                writer.append(http(i))
            except OSError:
                assert not background  # inline, the failure surfaces in append
    writer.close()
    assert sorted(store.read()["request_bytes"]) == list(range(25))
    assert writer.written == 25
    assert list(store.wal_dir.glob("*.log")) == []
    assert not background or "disk full" in caplog.text


def test_flush_raises_a_conversion_error_and_the_next_one_recovers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    broken = [True]

    def write(table: pa.Table, name: str) -> int:
        if broken[0]:
            raise OSError("no space left")
        return store._write_days(table, name)

    writer = StoreWriter(write, store.wal_dir, flush_every=1000)
    writer.extend(http(i) for i in range(30))
    with pytest.raises(OSError, match="no space"):
        writer.flush()
    assert Store(tmp_path).recovered == 0  # the segment is still the writer's
    broken[0] = False
    assert writer.flush() == 30
    writer.close()
    assert sorted(store.read()["request_bytes"]) == list(range(30))


def test_a_segment_of_another_format_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = tmp_path / "_wal"
    wal.mkdir()
    (wal / "w-foreign.log").write_bytes(b"\x07" * 4096)
    with caplog.at_level(logging.ERROR, logger="perfnb.store"):
        store = Store(tmp_path)
    assert store.recovered == 0
    assert (wal / "w-foreign.log").exists()
    assert "could not replay" in caplog.text


def test_store_append_takes_many_records(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.append(http(i, route=f"/r/{i % 50}") for i in range(20_000)) == 20_000
    frame = store.read(columns=["route", "request_bytes"])
    assert frame["request_bytes"].tolist() == list(range(20_000))
    assert frame["route"].nunique() == 50
