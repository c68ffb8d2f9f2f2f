"""Durability with real processes: SIGKILL mid-append, concurrent writers, replay."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from store_helpers import http

from perfnb.store import Store

CHILD = Path(__file__).with_name("store_child.py")


def spawn(root: Path, service: str, limit: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(root), service, str(limit)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = spawn(tmp_path, "killed", 0)
    assert child.stdout is not None
    assert child.stdout.readline().startswith("recovered")
    acknowledged = -1
    deadline = time.monotonic() + 60
    # Kill it mid-stream, once several flushes have happened and the log is busy.
    while acknowledged < 20_000 and time.monotonic() < deadline:
        acknowledged = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged = max([acknowledged, *(int(x) for x in child.stdout.read().split())])
    assert acknowledged >= 20_000

    for path in (tmp_path / "events").rglob("*.parquet"):
        pq.read_table(path)  # every file written before the kill reads
    with caplog.at_level(logging.WARNING, logger="perfnb.store"):
        store = Store(tmp_path)
    assert store.recovered > 0
    assert f"recovered {store.recovered} records" in caplog.text
    numbers = store.read()["request_bytes"].tolist()
    assert len(numbers) == len(set(numbers)), "duplicated rows"
    assert set(range(acknowledged + 1)) <= set(numbers)
    assert list((tmp_path / "_wal").glob("*.log")) == []
    assert Store(tmp_path).recovered == 0


@pytest.mark.slow
def test_two_processes_append_to_the_same_day(tmp_path: Path) -> None:
    children = [spawn(tmp_path, name, 15_000) for name in ("one", "two")]
    for child in children:
        child.communicate(timeout=120)
        assert child.returncode == 0
    frame = Store(tmp_path).read()
    assert frame["service"].value_counts().to_dict() == {"one": 15_000, "two": 15_000}
    for service in ("one", "two"):
        numbers = frame.loc[frame["service"] == service, "request_bytes"]
        assert sorted(numbers) == list(range(15_000))


def test_replay_after_crash_between_parquet_and_log_delete_adds_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.writer(flush_every=10_000, flush_seconds=3600)
    writer.extend(http(i) for i in range(50))
    (segment,) = (tmp_path / "_wal").glob("*.log")
    saved = tmp_path / "saved.log"
    shutil.copyfile(segment, saved)
    writer.close()  # writes the Parquet file, deletes the log
    shutil.copyfile(saved, segment)  # as if the process died before the delete
    again = Store(tmp_path)
    assert again.recovered == 0
    assert len(again.read()) == 50
    assert not segment.exists()


def test_unflushed_writer_is_recovered_on_next_open(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.writer(flush_every=10_000, flush_seconds=3600)
    writer.extend(http(i) for i in range(30))
    writer.append(http(30, tags={"a": "b"}))
    assert Store(tmp_path).recovered == 0, "a live writer's log is not replayed"
    # Abandon the writer as a killed process would: release its log lock only.
    assert writer._segment is not None
    writer._segment.close(delete=False)
    writer._segment = None
    again = Store(tmp_path)
    assert again.recovered == 31
    assert sorted(again.read()["request_bytes"]) == list(range(31))


def test_writer_flushes_on_count_and_on_age(tmp_path: Path) -> None:
    now = [0.0]
    store = Store(tmp_path)
    writer = store.writer(flush_every=10, flush_seconds=5.0)
    writer._clock = lambda: now[0]
    writer.extend(http(i) for i in range(25))
    assert writer.written == 20
    writer.append(http(25))
    now[0] = 6.0
    writer.append(http(26))
    assert writer.written == 27
    writer.close()
    assert len(store.read()) == 27


def test_writer_takes_frames(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = Store(tmp_path / "src")
    first.append([http(i) for i in range(40)])
    frame = first.read()
    with store.writer(flush_every=30) as writer:
        writer.extend(frame.iloc[:10])  # logged and buffered
        writer.extend(frame.iloc[10:])  # big enough to go straight to Parquet
    assert sorted(store.read()["request_bytes"]) == list(range(40))


def test_a_segment_being_created_is_left_to_its_writer(tmp_path: Path) -> None:
    # Another process has just created its segment and not yet locked it: an open
    # of the store in between must not take it away (its writer renames it next).
    wal = tmp_path / "_wal"
    wal.mkdir()
    born = wal / "w-1.new"
    born.write_bytes(b"")
    Store(tmp_path)
    assert born.exists()
    # one left behind by a process killed at that moment is cleared once it is old
    old = time.time() - 3600
    os.utime(born, (old, old))
    Store(tmp_path)
    assert not born.exists()
