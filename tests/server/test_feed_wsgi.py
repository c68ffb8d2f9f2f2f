"""The feed over WSGI: a Flask app under a real threaded WSGI server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from feed_support import SSEReader, http_record
from flask import Flask
from werkzeug.serving import make_server

from perfnb.server.beacon import encode_header
from perfnb.server.monitor import FeedLimits, Monitor

pytestmark = pytest.mark.slow

PREFIX = "/api/performance-metrics"


def _wrap(flask_app: Flask, monitor: Monitor) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if monitor.owns(environ.get("PATH_INFO", "")):
            return monitor.handle_wsgi(environ, start_response)
        beacon = environ.pop("HTTP_X_PERFNB_BEACON", None)
        if beacon is not None:
            monitor.take_beacon_header(beacon, route=environ["PATH_INFO"], client="127.0.0.1")
        return flask_app.wsgi_app(environ, start_response)

    return app


@pytest.fixture
def served() -> Iterator[tuple[str, Monitor]]:
    monitor = Monitor(
        token="s3cret",
        buffer_size=50,
        limits=FeedLimits(keepalive_seconds=0.2, stream_seconds=3.0, linger_seconds=0.0),
    )
    flask_app = Flask("wsgi-feed")

    @flask_app.get("/hello")
    def hello() -> str:
        monitor.record(http_record("/hello"))
        return "hello"

    server = make_server("127.0.0.1", 0, _wrap(flask_app, monitor), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", monitor
    finally:
        monitor.close()
        server.shutdown()
        thread.join(10)


AUTH = {"Authorization": "Bearer s3cret"}


def test_snapshot_control_and_token_over_wsgi(served: tuple[str, Monitor]) -> None:
    url, monitor = served
    assert httpx.get(f"{url}/hello").text == "hello"
    refused = httpx.get(f"{url}{PREFIX}")
    assert (refused.status_code, refused.content) == (401, b"")
    doc = httpx.get(f"{url}{PREFIX}", headers=AUTH).json()
    assert doc["metrics"]["apiResponseTime"] == 1.5
    state = httpx.post(f"{url}{PREFIX}/control", headers=AUTH, json={"enabled": False}).json()
    assert state["enabled"] is False
    httpx.get(f"{url}/hello")
    assert monitor.last_seq == 1
    bad = httpx.post(f"{url}{PREFIX}/control", headers=AUTH, json={"sample": "half"})
    assert bad.status_code == 400
    assert "sample" in bad.json()["error"]


def test_stream_over_wsgi_wakes_on_records_from_request_threads(
    served: tuple[str, Monitor],
) -> None:
    url, monitor = served
    with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=AUTH) as response:
        assert response.status_code == 200
        reader = SSEReader(response)
        while reader.next_event().get("event") != "hello":
            pass
        for _ in range(5):
            httpx.get(f"{url}/hello")
        numbers: list[int] = []
        while len(numbers) < 5:
            event = reader.next_event()
            if event.get("event") == "records":
                doc = json.loads(event["data"])
                numbers.extend(range(doc["first"], doc["last"] + 1))
                last_id = event["id"]
    assert numbers == [1, 2, 3, 4, 5]
    for _ in range(60):  # past the ring of 50
        monitor.record(http_record())
    headers = {**AUTH, "Last-Event-ID": last_id}
    with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=headers) as response:
        reader = SSEReader(response)
        event = reader.next_event()
        while event.get("event") != "dropped":
            event = reader.next_event()
    assert json.loads(event["data"]) == {"dropped": 10, "first_missing": 6, "last_missing": 15}


def test_wsgi_stream_ends_on_schedule(served: tuple[str, Monitor]) -> None:
    url, _ = served
    with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=AUTH) as response:
        reader = SSEReader(response)
        reader.read_to_end()  # returns only because the stream ended


def test_beacons_over_wsgi(served: tuple[str, Monitor]) -> None:
    url, monitor = served
    import time

    batch = {"v": 1, "page": "/", "records": [{"kind": "vital", "t": time.time() * 1000}]}
    assert httpx.post(f"{url}{PREFIX}/beacon", json=batch).status_code == 204
    assert httpx.post(f"{url}{PREFIX}/beacon", content=b"z" * 70_000).status_code == 413
    response = httpx.get(f"{url}/hello", headers={"X-Perfnb-Beacon": encode_header(batch)})
    assert response.text == "hello"
    response = httpx.get(f"{url}/hello", headers={"X-Perfnb-Beacon": "%%%"})
    assert response.text == "hello"
    counted = monitor.counters
    assert (counted["beacon_records"], counted["beacon_batches_bad"]) == (2, 1)
    assert counted["beacon_too_large"] == 1
