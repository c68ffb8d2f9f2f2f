"""The feed end to end: uvicorn on 127.0.0.1 serving a monitored app."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from feed_support import SSEReader, http_record, monitored_app, serve

from perfnb.server.monitor import FeedLimits, Monitor

pytestmark = pytest.mark.slow

PREFIX = "/api/performance-metrics"
FAST = FeedLimits(keepalive_seconds=0.3, stream_seconds=20.0, linger_seconds=0.0)


@pytest.fixture
def monitor() -> Monitor:
    return Monitor(buffer_size=1000, limits=FAST)


@pytest.fixture
def url(monitor: Monitor) -> Iterator[str]:
    with serve(monitored_app(monitor)) as base:
        yield base


def _events_until(reader: SSEReader, name: str) -> list[dict[str, str]]:
    """Events read up to and including the first one called ``name``."""
    seen = []
    while True:
        event = reader.next_event()
        if "event" in event:
            seen.append(event)
            if event["event"] == name:
                return seen


def _records_through(reader: SSEReader, last: int) -> tuple[list[int], int]:
    """Sequence numbers of the records received until ``last``, and the drops seen."""
    numbers: list[int] = []
    dropped = 0
    while not numbers or numbers[-1] < last:
        event = reader.next_event()
        kind = event.get("event")
        if kind == "dropped":
            dropped += json.loads(event["data"])["dropped"]
        elif kind == "records":
            doc = json.loads(event["data"])
            assert len(doc["records"]) == doc["last"] - doc["first"] + 1
            numbers.extend(range(doc["first"], doc["last"] + 1))
    return numbers, dropped


def test_snapshot_has_the_requirements_shape(url: str) -> None:
    httpx.get(f"{url}/hello")
    doc = httpx.get(f"{url}{PREFIX}").json()
    assert set(doc) == {"timestamp", "route", "metrics", "health"}
    assert set(doc["metrics"]) == {
        "navigationTime",
        "apiResponseTime",
        "componentRenderTime",
        "memoryUsage",
        "errorCount",
    }
    assert set(doc["health"]) == {"apiPolling", "serverResponse", "clientPerformance"}
    assert doc["metrics"]["apiResponseTime"] == 1.5
    assert doc["timestamp"].endswith("Z")
    other = httpx.get(f"{url}{PREFIX}", params={"route": "/elsewhere"}).json()
    assert other["route"] == "/elsewhere"
    assert other["metrics"]["apiResponseTime"] is None
    assert other["health"]["apiPolling"] == "unknown"


def test_stream_delivers_records_as_they_happen(url: str, monitor: Monitor) -> None:
    with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SSEReader(response)
        (hello,) = _events_until(reader, "hello")
        assert json.loads(hello["data"])["boot"] == monitor.boot
        httpx.get(f"{url}/hello")  # the app records its own request
        monitor.record(http_record("/direct"))
        numbers, dropped = _records_through(reader, 2)
    assert numbers == [1, 2]
    assert dropped == 0


def test_idle_stream_sends_keepalive_comments(url: str) -> None:
    with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
        reader = SSEReader(response)
        _events_until(reader, "hello")
        assert "keep-alive" in reader.next_event().get("comments", "")


def test_resume_with_last_event_id_loses_and_repeats_nothing(url: str, monitor: Monitor) -> None:
    for i in range(5):
        monitor.record(http_record(f"/r{i}"))
    with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
        reader = SSEReader(response)
        numbers, _ = _records_through(reader, 5)
        last_id = f"{monitor.boot}:{numbers[-1]}"
    for i in range(5, 12):
        monitor.record(http_record(f"/r{i}"))
    headers = {"Last-Event-ID": last_id}
    with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=headers) as response:
        reader = SSEReader(response)
        (hello,) = _events_until(reader, "hello")
        assert json.loads(hello["data"])["resumed"] is True
        numbers, dropped = _records_through(reader, 12)
    assert numbers == list(range(6, 13))
    assert dropped == 0
    # The same through the query string, as an EventSource's first request would.
    query = {"last_event_id": f"{monitor.boot}:10"}
    with httpx.stream("GET", f"{url}{PREFIX}/stream", params=query) as response:
        numbers, _ = _records_through(SSEReader(response), 12)
    assert numbers == [11, 12]


def test_exact_drop_count_when_the_consumer_fell_behind() -> None:
    monitor = Monitor(buffer_size=10, limits=FAST)
    with serve(monitored_app(monitor)) as url:
        monitor.record(http_record())
        with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
            first, _ = _records_through(SSEReader(response), 1)
        for _ in range(35):
            monitor.record(http_record())
        headers = {"Last-Event-ID": f"{monitor.boot}:{first[-1]}"}
        with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=headers) as response:
            reader = SSEReader(response)
            events = _events_until(reader, "dropped")
            missed = json.loads(events[-1]["data"])
            assert events[-1]["id"] == f"{monitor.boot}:26"
            numbers, _ = _records_through(reader, 36)
    assert missed == {"dropped": 25, "first_missing": 2, "last_missing": 26}
    assert numbers == list(range(27, 37))


def test_unknown_boot_restarts_from_this_boots_first_record(url: str, monitor: Monitor) -> None:
    for _ in range(3):
        monitor.record(http_record())
    headers = {"Last-Event-ID": "0123456789ab:999"}
    with httpx.stream("GET", f"{url}{PREFIX}/stream", headers=headers) as response:
        reader = SSEReader(response)
        (hello,) = _events_until(reader, "hello")
        doc = json.loads(hello["data"])
        numbers, _ = _records_through(reader, 3)
    assert doc["resumed"] is False
    assert doc["previous_boot"] == "0123456789ab"
    assert numbers == [1, 2, 3]


def test_since_now_skips_the_backlog(url: str, monitor: Monitor) -> None:
    for _ in range(4):
        monitor.record(http_record())
    with httpx.stream("GET", f"{url}{PREFIX}/stream", params={"since": "now"}) as response:
        reader = SSEReader(response)
        _events_until(reader, "hello")
        monitor.record(http_record())
        numbers, _ = _records_through(reader, 5)
    assert numbers == [5]


def test_batches_are_capped() -> None:
    monitor = Monitor(buffer_size=100, limits=FeedLimits(batch_records=7, linger_seconds=0.0))
    for _ in range(20):
        monitor.record(http_record())
    with serve(monitored_app(monitor)) as url, httpx.stream("GET", f"{url}{PREFIX}/stream") as r:
        reader = SSEReader(r)
        sizes = []
        while sum(sizes) < 20:
            event = reader.next_event()
            if event.get("event") == "records":
                sizes.append(len(json.loads(event["data"])["records"]))
    assert sizes == [7, 7, 6]


def test_records_from_other_threads_wake_the_stream(url: str, monitor: Monitor) -> None:
    with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
        reader = SSEReader(response)
        _events_until(reader, "hello")

        def produce() -> None:
            for _ in range(200):
                monitor.record(http_record())

        threads = [threading.Thread(target=produce) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        numbers, dropped = _records_through(reader, 800)
    assert numbers == list(range(1, 801))
    assert dropped == 0


def test_close_ends_open_streams(url: str, monitor: Monitor) -> None:
    with httpx.stream("GET", f"{url}{PREFIX}/stream") as response:
        reader = SSEReader(response)
        _events_until(reader, "hello")
        monitor.close()
        reader.read_to_end()  # returns only because the stream ended


def test_control_turns_recording_off_and_on_and_selects(url: str, monitor: Monitor) -> None:
    control = f"{url}{PREFIX}/control"
    state = httpx.post(control, json={"enabled": False}).json()
    assert state["enabled"] is False
    httpx.get(f"{url}/hello")
    assert monitor.last_seq == 0
    state = httpx.post(control, json={"enabled": True, "kinds": ["vital"]}).json()
    assert (state["enabled"], state["kinds"]) == (True, ["vital"])
    httpx.get(f"{url}/hello")
    assert monitor.last_seq == 0
    state = httpx.post(control, json={"kinds": None, "sample": 0.0}).json()
    httpx.get(f"{url}/hello")
    assert monitor.last_seq == 0
    assert monitor.counters["skipped_sample"] == 1
    httpx.post(control, json={"sample": 1})
    httpx.get(f"{url}/hello")
    assert monitor.last_seq == 1
    got = httpx.get(control).json()
    assert got["enabled"] is True
    assert got["kinds"] is None
    assert got["sample"] == 1.0
    assert got["counters"]["skipped_disabled"] == 1
    assert got["counters"]["skipped_kind"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"enabled": "on"}', "enabled"),
        (b'{"enabled": null}', "enabled"),
        (b'{"kinds": ["http", "bogus"]}', "kinds"),
        (b'{"sample": 7}', "sample"),
        (b'{"sample": null}', "sample"),
        (b'{"samples": 0.5}', "'samples'"),
    ],
)
def test_bad_control_is_400_naming_the_field(
    url: str, monitor: Monitor, body: bytes, field: str
) -> None:
    response = httpx.post(f"{url}{PREFIX}/control", content=body)
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert monitor.control.enabled
    assert monitor.control.sample == 1.0


def test_unknown_paths_and_methods(url: str) -> None:
    assert httpx.get(f"{url}{PREFIX}/nope").status_code == 404
    response = httpx.delete(f"{url}{PREFIX}/control")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert httpx.get(f"{url}{PREFIX}/beacon").status_code == 405
    assert httpx.head(f"{url}{PREFIX}").status_code == 200
