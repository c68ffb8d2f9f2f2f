"""The feed client: SSE parsing, connect() into a Stream, reconnects, restarts, drops."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server.feed_support import http_record, monitored_app, serve

from perfnb.errors import ConfigError
from perfnb.feedclient import SSEEvent, SSEParser, connect, feed_stream_url
from perfnb.schema import Record
from perfnb.server.monitor import FeedLimits, Monitor
from perfnb.stream import Stream

# -- the SSE parser --------------------------------------------------------------------


def test_parser_follows_the_event_stream_rules() -> None:
    parser = SSEParser()
    events = parser.feed(
        b"\xef\xbb\xbfretry: 1500\n\n"  # BOM, then a block without data: no event
        b": a comment\n"
        b"event: records\nid: b:1\ndata: line one\ndata:line two\n\n"
        b"data: no type\n\n"  # keeps the last id
        b"id: b\x00:9\ndata: x\n\n"  # an id with NUL is ignored
        b"id\ndata: y\n\n"  # an empty id resets it
        b"bogus: field\n\n"
    )
    assert events == [
        SSEEvent("records", "line one\nline two", "b:1"),
        SSEEvent("message", "no type", "b:1"),
        SSEEvent("message", "x", "b:1"),
        SSEEvent("message", "y", ""),
    ]
    assert parser.retry == 1500


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_parser_accepts_every_line_ending(newline: bytes) -> None:
    text = newline.join([b"event: e", b"id: 1", b"data: d", b"", b""])
    assert SSEParser().feed(text) == [SSEEvent("e", "d", "1")]


_STREAM = (
    b"retry: 10\r\n\r\n: hi\n"
    b"event: hello\ndata: {}\n\n"
    b'event: records\r\nid: q:5\r\ndata: {"a": 1}\r\n\r\n'
    b"event: dropped\rid: q:9\rdata: 2\r\r"
)


@given(cuts=st.lists(st.integers(0, len(_STREAM)), max_size=12))
def test_parser_gives_the_same_events_however_the_bytes_are_split(cuts: list[int]) -> None:
    whole = SSEParser().feed(_STREAM)
    parser = SSEParser()
    got: list[SSEEvent] = []
    bounds = [0, *sorted(cuts), len(_STREAM)]
    for start, end in itertools.pairwise(bounds):
        got += parser.feed(_STREAM[start:end])
    assert got == whole
    assert [e.event for e in whole] == ["hello", "records", "dropped"]


@given(st.binary(max_size=500))
def test_parser_never_raises(data: bytes) -> None:
    SSEParser().feed(data)


def test_feed_stream_url() -> None:
    assert feed_stream_url("http://h:1") == "http://h:1/api/performance-metrics/stream"
    assert feed_stream_url("http://h:1/p/stream") == "http://h:1/p/stream"
    with pytest.raises(ConfigError, match="url"):
        feed_stream_url("ftp://h/x")


def test_connect_checks_its_options() -> None:
    with pytest.raises(ConfigError, match="since"):
        connect("http://127.0.0.1:9", sink=print, since="yesterday")
    with pytest.raises(ConfigError, match="backoff"):
        connect("http://127.0.0.1:9", sink=print, backoff=(2.0, 1.0))
    with pytest.raises(ConfigError, match="stream, a store or a sink"):
        connect("http://127.0.0.1:9")


# -- against a live app (in-process uvicorn) -------------------------------------------

LIMITS = FeedLimits(keepalive_seconds=0.5, linger_seconds=0.01)


@pytest.mark.slow
def test_connect_delivers_into_a_stream_without_blocking() -> None:
    monitor = Monitor(limits=LIMITS)
    for i in range(30):
        monitor.record(http_record(f"/r{i % 3}"))
    stream = Stream()
    with serve(monitored_app(monitor)) as url, connect(url, stream=stream) as conn:
        assert conn.wait_for(lambda c: c.received == 30, timeout=10)
        for _ in range(20):
            monitor.record(http_record("/late"))
        assert conn.wait_for(lambda c: c.received == 50, timeout=10)
        assert conn.connected
    frame = stream.frame()
    assert len(frame) == 50
    assert set(frame["route"].astype(str)) == {"/r0", "/r1", "/r2", "/late"}
    stats = conn.stats()
    assert (stats["dropped"], stats["reconnects"], stats["invalid"]) == (0, 0, 0)
    assert not conn.running


@pytest.mark.slow
def test_scheduled_stream_ends_are_resumed_not_counted_as_reconnects() -> None:
    monitor = Monitor(limits=FeedLimits(stream_seconds=0.2, linger_seconds=0.0))
    got: list[Record] = []
    with serve(monitored_app(monitor)) as url, connect(url, sink=got.append) as conn:
        for batch in range(5):
            for _ in range(10):
                monitor.record(http_record(f"/b{batch}"))
            assert conn.wait_for(lambda c, n=(batch + 1) * 10: c.received == n, timeout=10)
            time.sleep(0.1)  # let streams end on schedule in between (not a sync point)
        assert conn.wait_for(lambda c: c.stats()["streams"] >= 3, timeout=10)
    assert len(got) == 50
    assert [r["route"] for r in got] == [f"/b{i // 10}" for i in range(50)]
    assert conn.reconnects == 0
    assert conn.dropped == 0


@pytest.mark.slow
def test_reconnect_after_the_server_went_away_counts_exact_drops() -> None:
    monitor = Monitor(buffer_size=10, limits=LIMITS)
    app = monitored_app(monitor)
    got: list[Record] = []
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        conn = connect(url, sink=got.append, backoff=(0.05, 0.2))
        for _ in range(3):
            monitor.record(http_record())
        assert conn.wait_for(lambda c: c.received == 3, timeout=10)
    assert conn.wait_for(lambda c: not c.connected, timeout=10)
    for _ in range(25):  # 3 + 25 = 28: the ring of 10 keeps 19..28, so 4..18 are lost
        monitor.record(http_record("/while-away"))
    monitor._closed = False  # the same monitor serves again (the test's "restart")
    with serve(app, port=port):
        assert conn.wait_for(lambda c: c.received == 13, timeout=15)
        conn.close()
    assert conn.dropped == 15
    assert conn.reconnects == 1
    assert [r["route"] for r in got[3:]] == ["/while-away"] * 10


@pytest.mark.slow
def test_a_refused_token_stops_the_connection_with_an_error() -> None:
    monitor = Monitor(token="right", limits=LIMITS)
    with serve(monitored_app(monitor)) as url:
        conn = connect(url, sink=print, token="wrong")
        assert conn.wait_for(lambda c: not c.running, timeout=10)
        assert conn.error is not None
        assert "401" in str(conn.error)
        conn.close()
        with connect(url, sink=print, token="right") as good:
            assert good.wait_for(lambda c: c.connected, timeout=10)


@pytest.mark.slow
def test_connect_writes_a_store_and_closes_its_writer(tmp_path: Path) -> None:
    from perfnb.store import Store

    monitor = Monitor(limits=LIMITS)
    for i in range(25):
        monitor.record(http_record(f"/s{i % 5}"))
    stream = Stream()
    with serve(monitored_app(monitor)) as url:
        conn = connect(url, stream=stream, store=Store(str(tmp_path)))
        assert conn.wait_for(lambda c: c.received == 25, timeout=10)
        conn.close()
    frame = Store(str(tmp_path)).read()
    assert len(frame) == 25
    assert sorted(frame["route"].astype(str).unique()) == [f"/s{i}" for i in range(5)]
    assert len(stream.frame()) == 25
