"""The fleet directory's journals and feed, on real files, with monitors in one process.

Each monitor stands for one worker process (its own boot id, its own journal);
the servers that run them for real are in ``test_fleet_servers.py``.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from perfnb.server import Monitor
from perfnb.server.fleetfeed import FleetCursor, parse_fleet_id
from perfnb.server.fleetread import GONE_FILE, FleetReader, housekeep


def _rec(i: int) -> dict[str, object]:
    return {
        "time": datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "route": "/r",
        "status": 200,
        "duration_ms": float(i),
    }


def _fill(monitor: Monitor, n: int) -> None:
    for i in range(n):
        monitor.record(_rec(i))  # type: ignore[arg-type]
    assert monitor.fleet is not None
    monitor.fleet.flush()


def _events(cursor: FleetCursor, *, opening: bool = True) -> list[tuple[str, dict, str]]:
    raw = cursor.opening() if opening else b""
    while chunk := cursor.pull():
        raw += chunk
    out = []
    for block in raw.decode().split("\n\n"):
        name = data = ident = ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line.startswith("id: "):
                ident = line[4:]
        if name:
            out.append((name, json.loads(data), ident))
    return out


@pytest.fixture
def monitors(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Monitor] = []

    def make(**options: object) -> Monitor:
        m = Monitor(service="fleet-test", fleet=tmp_path, **options)  # type: ignore[arg-type]
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def test_every_process_read_once_and_resumed_exactly(monitors) -> None:  # type: ignore[no-untyped-def]
    a, b = monitors(), monitors()
    _fill(a, 250)
    _fill(b, 130)
    events = _events(FleetCursor(a, last_event_id=None, since="oldest"))
    hello = events[0][1]
    assert hello["fleet"] is True
    assert {i["boot"] for i in hello["instances"]} == {a.boot, b.boot}
    got = {
        (e[1]["instance"], e[1]["first"] + k)
        for e in events
        if e[0] == "records"
        for k in range(len(e[1]["records"]))
    }
    assert len(got) == 380
    assert {boot for boot, _ in got} == {a.boot, b.boot}
    token = events[-1][2]
    assert parse_fleet_id(token) == {a.boot: 250, b.boot: 130}
    # every record names its process
    instances = {
        r["tags"]["instance"] for e in events if e[0] == "records" for r in e[1]["records"]
    }
    assert instances == {a.fleet.instance, b.fleet.instance}  # type: ignore[union-attr]
    # more arrives; a stream resumed from the token gets exactly that
    _fill(a, 7)
    _fill(b, 3)
    more = _events(FleetCursor(b, last_event_id=token, since="oldest"))
    assert more[0][1]["resumed"] is True
    counts = {e[1]["instance"]: len(e[1]["records"]) for e in more if e[0] == "records"}
    assert counts == {a.boot: 7, b.boot: 3}


def test_a_process_that_starts_later_is_read_from_its_first_record(monitors) -> None:  # type: ignore[no-untyped-def]
    a = monitors()
    _fill(a, 5)
    first = _events(FleetCursor(a, last_event_id=None, since="now"))
    assert [e for e in first if e[0] == "records"] == []
    token = f"{a.boot}:{a.last_seq}"
    late = monitors()
    _fill(late, 4)
    events = _events(FleetCursor(a, last_event_id=token, since="oldest"))
    records = [e for e in events if e[0] == "records"]
    assert [(e[1]["instance"], e[1]["first"], e[1]["last"]) for e in records] == [(late.boot, 1, 4)]


def test_a_reader_behind_rotated_segments_is_told_exactly_what_it_missed(monitors) -> None:  # type: ignore[no-untyped-def]
    a = monitors()
    assert a.fleet is not None
    a.fleet.segment_bytes = 4000
    a.fleet.keep_segments = 2
    for _ in range(20):
        _fill(a, 10)  # one flush each: segments rotate every ~15 records
    journal = FleetReader(a.fleet.directory).journals()[0]
    assert journal.first > 1  # older segments are gone
    events = _events(FleetCursor(a, last_event_id=f"{a.boot}:0", since="oldest"))
    dropped = [e[1] for e in events if e[0] == "dropped"]
    assert dropped == [
        {
            "instance": a.boot,
            "dropped": journal.first - 1,
            "first_missing": 1,
            "last_missing": journal.first - 1,
        }
    ]
    got = sum(len(e[1]["records"]) for e in events if e[0] == "records")
    assert got == 200 - (journal.first - 1)


def test_a_resumed_stream_seeks_into_a_large_segment(monitors) -> None:  # type: ignore[no-untyped-def]
    a = monitors(buffer_size=30_000)
    _fill(a, 20_000)
    for after in (0, 1, 9_999, 12_345, 19_999, 20_000):
        events = _events(FleetCursor(a, last_event_id=f"{a.boot}:{after}", since="oldest"))
        records = [e[1] for e in events if e[0] == "records"]
        numbers = [r["first"] + k for r in records for k in range(len(r["records"]))]
        assert numbers == list(range(after + 1, 20_001))


def test_numbers_the_ring_overwrote_before_the_journal_are_counted(monitors) -> None:  # type: ignore[no-untyped-def]
    a = monitors(buffer_size=10)
    assert a.fleet is not None
    a.fleet._stop.set()  # keep the thread from writing, to let the ring overwrite
    time.sleep(0.2)
    for i in range(25):
        a.record(_rec(i))  # type: ignore[arg-type]
    a.fleet.flush()
    events = _events(FleetCursor(a, last_event_id=None, since="oldest"))
    dropped = [e[1] for e in events if e[0] == "dropped"]
    records = [e[1] for e in events if e[0] == "records"]
    assert [(d["first_missing"], d["last_missing"]) for d in dropped] == [(1, 15)]
    assert [(r["first"], r["last"]) for r in records] == [(16, 25)]


def test_the_journal_of_a_dead_process_is_removed_and_its_unread_rest_reported(
    monitors,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    a = monitors()
    _fill(a, 3)
    # a journal left by a process that has ended (a pid no process has)
    dead = tmp_path / "host-4194303-deadbeef0001.000000.jsonl"
    header = {
        "perfnb_journal": 1,
        "instance": "host-4194303-deadbeef0001",
        "boot": "deadbeef0001",
        "host": socket.gethostname(),
        "pid": 4194303,
        "service": "x",
        "part": 0,
        "first": 1,
    }
    lines = [json.dumps(header)] + [
        json.dumps(
            {"s": i, "r": {"time": "2026-01-01T00:00:00Z", "source": "server", "kind": "http"}}
        )
        for i in range(1, 11)
    ]
    dead.write_text("\n".join(lines) + "\n")
    token = f"{a.boot}:3,deadbeef0001:4"
    housekeep(tmp_path, keep_dead_seconds=0.0)
    assert not dead.exists()
    assert json.loads((tmp_path / GONE_FILE).read_text())["last"] == 10
    events = _events(FleetCursor(a, last_event_id=token, since="oldest"))
    dropped = [e[1] for e in events if e[0] == "dropped"]
    assert dropped == [
        {"instance": "deadbeef0001", "dropped": 6, "first_missing": 5, "last_missing": 10}
    ]


def test_control_reaches_every_process(monitors) -> None:  # type: ignore[no-untyped-def]
    a, b = monitors(), monitors()
    a.configure(enabled=False, kinds=["http"])
    a.publish_control()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b.enabled:
        time.sleep(0.02)
    assert not b.enabled
    assert b.control.kinds == frozenset({"http"})
    # a process that starts later takes the fleet's state too
    c = monitors()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and c.enabled:
        time.sleep(0.02)
    assert not c.enabled


def test_the_snapshot_and_control_answer_for_the_whole_fleet(monitors) -> None:  # type: ignore[no-untyped-def]
    a, b = monitors(), monitors()
    for m, n in ((a, 3), (b, 4)):
        for _ in range(n):
            m.record({**_rec(0), "status": 500})
        m.fleet.flush()
    state = a.state()
    assert {i["boot"] for i in state["fleet"]["instances"]} == {a.boot, b.boot}  # type: ignore[index]
    # the errors of both processes, whichever answers
    assert a.snapshot()["metrics"]["errorCount"] == 7
    assert b.snapshot()["metrics"]["errorCount"] == 7


def test_a_bad_fleet_id_reads_from_the_start() -> None:
    assert parse_fleet_id("a:1,b") is None
    assert parse_fleet_id("a:-1") is None
    assert parse_fleet_id("x" * 40_000) is None
