"""The feed client's resume point and counts, against scripted feeds (httpx.MockTransport).

Event ids are opaque: sent back as they came, never read for app restarts; counts
per instance; a store that refuses a batch makes the client ask again from the
last stored point; ``0 missed`` only when it is true.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from perfnb.errors import ConfigError, StoreError
from perfnb.feedclient import FeedConnection, connect
from perfnb.feedcounts import missed
from perfnb.feedsinks import Destinations, destinations
from perfnb.feedtargets import feed_key, read_targets
from perfnb.recorder import main_record
from perfnb.schema import Record
from perfnb.store import Store
from perfnb.store.resume import ResumePoints

URL = "http://127.0.0.1:8000"


def wire(route: str, second: int = 0) -> dict[str, Any]:
    return {
        "time": f"2026-01-01T00:00:{second:02d}.000000Z",
        "source": "server",
        "kind": "http",
        "route": route,
    }


def sse(*events: tuple[str, dict[str, Any], str | None]) -> bytes:
    out = b"retry: 20\n\n"
    for name, data, event_id in events:
        out += f"event: {name}\n".encode()
        if event_id is not None:
            out += f"id: {event_id}\n".encode()
        out += f"data: {json.dumps(data)}\n\n".encode()
    return out


class Script:
    """Answers each stream request with the next body; then hello-only streams."""

    def __init__(self, *bodies: bytes, hello: dict[str, Any] | None = None) -> None:
        self._bodies = list(bodies)
        self._idle = sse(("hello", hello or {"boot": "b", "resumed": True}, None))
        self.last_event_ids: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.last_event_ids.append(request.headers.get("last-event-id"))
            body = self._bodies.pop(0) if self._bodies else self._idle
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def follow(script: Script, out: Destinations, **options: Any) -> FeedConnection:
    return FeedConnection(
        URL,
        destinations=out,
        token=None,
        since=options.pop("since", "oldest"),
        backoff=(0.01, 0.05),
        read_timeout=5.0,
        transport=httpx.MockTransport(script),
        **options,
    )


COMPOSITE = "w1:4|w2:7"  # a multi-worker token: opaque to the client


def test_opaque_tokens_go_back_as_they_came_and_counts_are_per_instance() -> None:
    hello = {
        "boot": "fleet-1",
        "resumed": False,
        "instances": [
            {"instance": "w1", "host": "h1", "pid": 11},
            {"instance": "w2", "host": "h1", "pid": 12},
        ],
    }
    script = Script(
        sse(
            ("hello", hello, None),
            ("records", {"records": [wire("/a"), wire("/b")], "instance": "w1"}, "w1:2|w2:0"),
            ("records", {"records": [wire("/c")], "instance": "w2"}, "w1:2|w2:1"),
            ("dropped", {"dropped": 5, "instance": "w2"}, "w1:2|w2:6"),
            ("records", {"records": [wire("/d")], "instance": "w2"}, "w1:2|w2:7"),
            ("records", {"records": [wire("/e"), wire("/f")], "instance": "w1"}, COMPOSITE),
        ),
        hello={"boot": "fleet-1", "resumed": True},
    )
    got: list[Record] = []
    conn = follow(script, destinations(sink=got.append))
    assert conn.wait_for(lambda c: c.received == 6 and len(script.last_event_ids) >= 2, timeout=10)
    conn.close()
    assert [r["route"] for r in got] == ["/a", "/b", "/c", "/d", "/e", "/f"]
    assert script.last_event_ids[:2] == [None, COMPOSITE]
    assert conn.last_event_id == COMPOSITE
    assert conn.instances() == {
        "w1": {"host": "h1", "pid": 11, "received": 4, "dropped": 0},
        "w2": {"host": "h1", "pid": 12, "received": 2, "dropped": 5},
    }
    stats = conn.stats()
    assert (stats["dropped"], stats["boot_changes"], stats["reconnects"]) == (5, 0, 0)
    assert conn.missed() == "5 missed"


def test_a_fleets_processes_are_named_by_their_boot_as_its_events_name_them() -> None:
    hello = {
        "boot": "b1",
        "fleet": True,
        "resumed": True,
        "instances": [
            {"instance": "h-11-b1", "boot": "b1", "host": "h", "pid": 11, "alive": True},
            {"instance": "h-12-b2", "boot": "b2", "host": "h", "pid": 12, "alive": False},
        ],
    }
    script = Script(
        sse(
            ("hello", hello, None),
            ("records", {"records": [wire("/a")], "instance": "b1"}, "b1:1,b2:0"),
            ("dropped", {"dropped": 2, "instance": "b2"}, "b1:1,b2:2"),
        ),
        hello=hello,
    )
    conn = follow(script, destinations(sink=lambda rec: None))
    assert conn.wait_for(lambda c: c.dropped == 2, timeout=10)
    conn.close()
    assert conn.instances() == {
        "b1": {
            "instance": "h-11-b1",
            "host": "h",
            "pid": 11,
            "alive": True,
            "received": 1,
            "dropped": 0,
        },
        "b2": {
            "instance": "h-12-b2",
            "host": "h",
            "pid": 12,
            "alive": False,
            "received": 0,
            "dropped": 2,
        },
    }
    assert conn.boot_changes == 0


def test_an_app_restart_is_known_from_hello_and_counted_once() -> None:
    restarted = {"boot": "new", "resumed": False, "previous_boot": "old"}
    script = Script(
        sse(("hello", restarted, None)),
        sse(("hello", restarted, None)),  # the same news on a stream reopened
        sse(("hello", restarted, None), ("records", {"records": [wire("/a")]}, "new:1")),
        hello={"boot": "new", "resumed": True},
    )
    got: list[Record] = []
    conn = follow(script, destinations(sink=got.append), last_event_id="old:9")
    assert conn.wait_for(lambda c: c.received == 1, timeout=10)
    conn.close()
    assert conn.boot_changes == 1
    assert conn.instances() == {
        "old": {"received": 0, "dropped": 0, "boot_changes": 1},
        "new": {"received": 1, "dropped": 0},
    }
    assert "0 missed" not in conn.missed()
    assert script.last_event_ids[:3] == ["old:9", "old:9", "old:9"]


class Refusing:
    """A store writer that refuses its first ``refuse`` commits."""

    def __init__(self, store: Store, refuse: int) -> None:
        self._writer = store.writer()
        self.resume_points = self._writer.resume_points
        self.refuse = refuse

    def commit(self, records: list[Record], *, key: str, mark: Any) -> int:
        if self.refuse:
            self.refuse -= 1
            raise OSError("disk full")
        return self._writer.commit(records, key=key, mark=mark)

    def extend(self, records: list[Record]) -> Any:
        return self._writer.extend(records)

    def flush(self) -> Any:
        return self._writer.flush()

    def close(self) -> Any:
        return self._writer.close()


def test_a_batch_the_store_refuses_is_asked_for_again_and_delivered_once(
    tmp_path: Path,
) -> None:
    body = sse(
        ("hello", {"boot": "b", "resumed": True}, None),
        ("records", {"records": [wire("/a")]}, "b:1"),
        ("records", {"records": [wire("/b")]}, "b:2"),
    )
    script = Script(body, body)
    writer = Refusing(Store(tmp_path), refuse=1)
    got: list[Record] = []
    out = Destinations([lambda batch: got.extend(batch)], writer, owned=True)
    # the first commit (/a) is refused: the client comes back without moving
    conn = follow(script, out)
    assert conn.wait_for(lambda c: c.received == 2, timeout=10)
    conn.close()
    out.finish()
    assert [r["route"] for r in got] == ["/a", "/b"]
    assert conn.stats()["store_errors"] == 1
    assert script.last_event_ids[:2] == [None, None]
    frame = Store(tmp_path).read()
    assert sorted(frame["route"].astype(str)) == ["/a", "/b"]


def test_a_store_with_a_resume_point_resumes_the_feed_and_its_totals(tmp_path: Path) -> None:
    first = Script(
        sse(
            ("hello", {"boot": "b", "resumed": False}, None),
            ("records", {"records": [wire("/a"), wire("/b")]}, "b:2"),
            ("dropped", {"dropped": 3}, "b:5"),
        )
    )
    out = destinations(store=tmp_path)
    out.claim(feed_key(URL))
    conn = follow(first, out, on_close=out.finish)
    assert conn.wait_for(lambda c: c.dropped == 3, timeout=10)
    conn.close()
    point = ResumePoints(tmp_path / "_wal").get(feed_key(URL))
    assert point is not None
    assert point["token"] == "b:5"
    assert point["totals"]["received"] == 2
    assert point["totals"]["dropped"] == 3

    second = Script(
        sse(
            ("hello", {"boot": "b", "resumed": True}, None),
            ("records", {"records": [wire("/c")]}, "b:6"),
        )
    )
    out = destinations(store=tmp_path)
    out.claim(feed_key(URL))
    conn = follow(second, out, on_close=out.finish, since="now")
    assert conn.resumed_from == "b:5"
    assert conn.wait_for(lambda c: c.received == 1, timeout=10)
    conn.close()
    assert second.last_event_ids[0] == "b:5", "a stored point wins over since"
    assert conn.totals.received == 3
    assert conn.totals.dropped == 3
    assert conn.dropped == 0, "this connection's own counts start at zero"
    assert sorted(Store(tmp_path).read()["route"].astype(str)) == ["/a", "/b", "/c"]


def test_a_second_follower_of_the_same_feed_and_store_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with (
        connect(URL, store=store, backoff=(0.05, 0.1)),
        pytest.raises(StoreError, match="another follower"),
    ):
        connect(URL + "/api/performance-metrics/", store=store)
    with connect(URL, store=store, backoff=(0.05, 0.1)):
        pass


def test_missed_says_0_missed_only_when_true() -> None:
    assert missed(0, 0) == "0 missed"
    for dropped, restarts in ((1, 0), (0, 1), (10, 2)):
        assert "0 missed" not in missed(dropped, restarts)
    assert missed(7, 0) == "7 missed"


def test_several_urls_are_checked_before_anything_is_followed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="same feed"):
        connect([URL, "HTTP://127.0.0.1:8000/api/performance-metrics?token=x"], sink=print)
    with pytest.raises(ConfigError, match="last_event_id"):
        connect([URL], sink=print, last_event_id="b:1")
    with pytest.raises(ConfigError, match="empty list"):
        connect([], sink=print)
    with pytest.raises(ConfigError, match="url"):
        connect([URL, "ftp://x"], store=tmp_path)
    # nothing was left holding the store
    with connect([URL], store=tmp_path, backoff=(0.05, 0.1)) as group:
        assert list(group.feeds) == [feed_key(URL)]


def test_feed_keys_name_one_feed_however_it_is_spelt() -> None:
    spellings = [
        "http://127.0.0.1:8000",
        "HTTP://127.0.0.1:8000/api/performance-metrics/",
        "http://127.0.0.1:8000/api/performance-metrics/stream?token=s3cret&since=now",
        "http://user:pw@127.0.0.1:8000/api/performance-metrics",
    ]
    assert {feed_key(u) for u in spellings} == {
        "http://127.0.0.1:8000/api/performance-metrics/stream"
    }
    assert feed_key("https://[::1]:443/x") == "https://[::1]/x/stream"


def test_targets_files_and_the_recorders_arguments(tmp_path: Path) -> None:
    good = tmp_path / "targets.txt"
    good.write_text("# hosts\nhttp://127.0.0.1:8001\n\n  http://127.0.0.1:8002/perf  # b\n")
    assert read_targets(good) == ["http://127.0.0.1:8001", "http://127.0.0.1:8002/perf"]
    bad = tmp_path / "bad.txt"
    bad.write_text("http://127.0.0.1:8001\nftp://nope\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2"):
        read_targets(bad)
    store = str(tmp_path / "store")
    assert main_record(["--store", store]) == 2
    assert main_record(["--store", store, "--targets", str(bad)]) == 2
    assert main_record(["--store", store, "--targets", str(tmp_path / "missing")]) == 2
    assert main_record([URL, URL + "/", "--store", store]) == 2


def test_doctests() -> None:
    import doctest

    import perfnb.feedcounts
    import perfnb.feedgroup
    import perfnb.feedsinks
    import perfnb.feedtargets
    import perfnb.store.resume

    for module in (
        perfnb.feedcounts,
        perfnb.feedgroup,
        perfnb.feedsinks,
        perfnb.feedtargets,
        perfnb.store.resume,
    ):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__
