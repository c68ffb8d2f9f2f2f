"""watch(): the engine live on a real Stream, into a real Parquet store and a real webhook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.watch import check_webhook, watch
from perfnb.errors import ConfigError
from perfnb.schema import Record
from perfnb.store import Store
from perfnb.stream import Stream

LIVE = HealthConfig(window_s=0.2, enter_windows=2, leave_windows=2, min_requests=3)


def wait_until(predicate: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def failing_requests(stream: Stream, stop: threading.Event) -> None:
    """Every request fails, a few every 50 ms, until stopped."""
    while not stop.is_set():
        now = datetime.now(UTC)
        stream.extend(
            [
                {
                    "time": now,
                    "source": "server",
                    "kind": "http",
                    "route": "/api/x",
                    "status": 500,
                    "duration_ms": 2.0,
                }
                for _ in range(3)
            ]
        )
        stop.wait(0.05)


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream() as s:
        yield s


@pytest.fixture
def errors(stream: Stream) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=failing_requests, args=(stream, stop), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


class Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 204

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[Hook]]]:
    handler = type("H", (Hook,), {"bodies": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("errors")
def test_alerts_reach_the_stream_the_store_the_callback_and_the_webhook(
    stream: Stream, tmp_path: Path, hook: tuple[str, type[Hook]]
) -> None:
    url, handler = hook
    seen: list[Record] = []
    store = Store(tmp_path / "store")
    with watch(stream, config=LIVE, store=store, on_alert=seen.append, webhook=url) as watcher:
        wait_until(lambda: any(r["name"] == "error_rate" for r in seen))
        wait_until(lambda: watcher.webhook_sent >= 1)
    (alert,) = [r for r in seen if r["name"] == "error_rate"]
    assert alert["route"] == "/api/x"
    assert alert["tags"]["state"] == "raised"
    assert handler.bodies[0]["name"] == "error_rate"
    assert handler.bodies[0]["source"] == "perfnb"
    frame = stream.frame()
    pushed = frame[(frame["source"] == "perfnb") & (frame["kind"] == "alert")]
    assert list(pushed["name"]) == ["error_rate"]
    stored = store.read(kinds=["alert", "health"])
    assert "error_rate" in set(stored["name"])
    assert watcher.callback_errors == 0
    assert watcher.webhook_failed == 0


@pytest.mark.usefixtures("errors")
def test_a_failing_callback_and_webhook_are_counted_not_fatal(
    stream: Stream, hook: tuple[str, type[Hook]]
) -> None:
    url, handler = hook
    handler.status = 500

    def broken(record: Record) -> None:
        raise RuntimeError("user code")

    with watch(stream, config=LIVE, on_alert=broken, webhook=url) as watcher:
        wait_until(lambda: watcher.callback_errors >= 1 and watcher.webhook_failed >= 1)
        # the engine still runs: its states keep being judged
        wait_until(lambda: watcher.engine.stats["windows"] > 5)
    assert watcher.alerts


def test_own_records_coming_back_are_ignored(stream: Stream) -> None:
    with watch(stream, config=LIVE) as watcher:
        now = datetime.now(UTC)
        stream.push(
            {
                "time": now,
                "source": "perfnb",
                "kind": "alert",
                "name": "error_rate",
                "tags": {"state": "raised"},
            }
        )
        stream.push(
            {
                "time": now,
                "source": "server",
                "kind": "http",
                "route": "/a",
                "status": 200,
                "duration_ms": 1.0,
            }
        )
        wait_until(lambda: watcher.engine.stats["records"] == 1)


def test_the_ticker_clears_alerts_when_records_stop(stream: Stream) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=failing_requests, args=(stream, stop), daemon=True)
    with watch(stream, config=LIVE.replace(runaway_window_s=0.5), tick=0.05) as watcher:
        thread.start()
        for t in range(12):  # a runaway poller, then silence
            stream.push(
                {
                    "time": datetime.fromtimestamp(time.time() + t * 0.01, UTC),
                    "source": "server",
                    "kind": "http",
                    "route": "/api/poll",
                    "client": "tab",
                    "status": 200,
                    "duration_ms": 1.0,
                }
            )
        wait_until(lambda: any(a["name"] == "runaway" for a in watcher.alerts))
        stop.set()
        thread.join()
        wait_until(
            lambda: any(
                a["name"] == "runaway" and a["tags"]["state"] == "cleared" for a in watcher.alerts
            )
        )


@pytest.mark.parametrize(
    ("url", "allowed", "message"),
    [
        ("http://example.com/hook", None, "host 'example.com'"),
        ("http://10.1.2.3/hook", None, "host '10.1.2.3'"),
        ("ftp://127.0.0.1/hook", None, "http:// or https://"),
        ("not a url", None, "http:// or https://"),
        ("http://hooks.internal/x", ["127.0.0.1"], "hooks.internal"),
    ],
)
def test_webhooks_only_to_allowed_hosts(url: str, allowed: list[str] | None, message: str) -> None:
    with pytest.raises(ConfigError, match="webhook") as info:
        check_webhook(url, allowed or ["127.0.0.1", "::1", "localhost"])
    assert message in str(info.value)


def test_allowed_hosts_can_be_widened_and_bad_options_are_named(stream: Stream) -> None:
    assert check_webhook("http://hooks.internal/x", ["hooks.internal"])
    assert check_webhook("http://[::1]:9/x", ["::1"])
    with pytest.raises(ConfigError, match="'window_s'"):
        watch(stream, config={"window_s": -1})
    with pytest.raises(ConfigError, match="every"):
        watch(stream, every=0)
    with pytest.raises(ConfigError, match="store"):
        watch(stream, store=42)
    with pytest.raises(ConfigError, match="on_alert"):
        watch(stream, on_alert="print")  # type: ignore[arg-type]


def test_a_stuck_webhook_fills_its_bounded_queue_and_counts_the_rest(stream: Stream) -> None:
    release = threading.Event()

    class Stuck(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            release.wait(10)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stuck)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with watch(stream, config=LIVE, webhook=url, webhook_queue=2) as watcher:
            start = time.time()
            stream.extend(
                [
                    {
                        "time": datetime.fromtimestamp(start + i * 0.01, UTC),
                        "source": "server",
                        "kind": "http",
                        "route": "/api/poll",
                        "client": f"tab-{c}",
                        "status": 200,
                        "duration_ms": 1.0,
                    }
                    for i in range(8)
                    for c in range(20)
                ]
            )
            wait_until(lambda: len(watcher.alerts) == 20)
            assert watcher.webhook_dropped >= 20 - 2 - 1  # queue of 2, one in flight
            release.set()
            wait_until(lambda: watcher.webhook_sent >= 1)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
