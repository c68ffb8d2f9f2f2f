"""The Dashboard through its traits and messages, with a real Stream and no kernel."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError
from perfnb.stream import Stream
from perfnb.widgets.dashboard import Dashboard


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def http(route: str = "/api/x", **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "time": datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "route": route,
        "status": 200,
        "duration_ms": 12.0,
    }
    rec.update(fields)
    return rec


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream() as s:
        yield s


@pytest.fixture
def sent() -> list[tuple[dict[str, Any], list[Any]]]:
    return []


@pytest.fixture
def dash(stream: Stream, sent: list[tuple[dict[str, Any], list[Any]]]) -> Iterator[Dashboard]:
    # two-second health windows: the lights are judged soon after records arrive
    d = Dashboard(stream, window=60, health=HealthConfig(window_s=2.0))
    d.send = lambda content, buffers=None: sent.append((content, buffers or []))  # type: ignore[method-assign]
    yield d
    d.close()


def test_records_reach_the_browser_as_per_second_batches(
    stream: Stream, dash: Dashboard, sent: list[tuple[dict[str, Any], list[Any]]]
) -> None:
    stream.extend([http() for _ in range(50)])
    wait_for(lambda: any(m["seconds"] for m, _ in sent))
    seconds = [s for m, _ in sent for s in m["seconds"]]
    assert sum(s["n"] for s in seconds) >= 50 - 0  # a second may be re-sent as it grows
    assert all(m["type"] == "update" and not m["reset"] for m, _ in sent)
    # the engine judges the window once it ends, and the ticker sends the lights
    wait_for(
        lambda: (
            dash.last_update is not None
            and dash.last_update["health"]["serverResponse"]["state"] == "good"
        ),
        timeout=15.0,
    )


def test_at_most_two_batches_a_second_however_fast_records_come(
    stream: Stream, dash: Dashboard, sent: list[tuple[dict[str, Any], list[Any]]]
) -> None:
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        stream.extend([http() for _ in range(20)])
        time.sleep(0.01)
    elapsed = time.monotonic() - started + 0.5
    assert 1 <= len(sent) <= 2 * elapsed + 1


def test_a_filter_change_resends_everything_under_the_new_filter(
    stream: Stream, dash: Dashboard, sent: list[tuple[dict[str, Any], list[Any]]]
) -> None:
    stream.extend([http(), http(run_id="load-1"), http(run_id="load-1")])
    wait_for(lambda: dash.aggregator.stats["records"] == 3)
    sent.clear()
    dash.exclude_load = False
    # the health ticker may send an ordinary update at any moment: find the reset
    msg = next(m for m, _ in sent if m["reset"])
    assert sum(s["n"] for s in msg["seconds"]) == 3
    dash.routes = ["/api/other"]
    assert sum(s["n"] for s in sent[-1][0]["seconds"]) == 0


def test_pause_holds_updates_and_resume_sends_a_reset(
    stream: Stream, dash: Dashboard, sent: list[tuple[dict[str, Any], list[Any]]]
) -> None:
    dash.paused = True
    stream.extend([http()])
    wait_for(lambda: dash.aggregator.stats["records"] == 1)
    time.sleep(0.6)  # one delivery period: nothing may be sent while paused
    assert all(not m["seconds"] for m, _ in sent)
    dash.paused = False
    assert sent[-1][0]["reset"] is True
    assert sent[-1][0]["seconds"]


def test_a_view_saying_hello_gets_plotly_once_and_everything(
    dash: Dashboard, sent: list[tuple[dict[str, Any], list[Any]]]
) -> None:
    dash._handle_custom_msg({"type": "hello", "plotly": True}, [])
    (plotly_msg, buffers), (update, _) = sent
    assert plotly_msg["type"] == "plotly"
    assert plotly_msg["version"].count(".") == 2
    assert len(buffers[0]) > 500_000
    assert b"plotly.js" in buffers[0][:200]
    assert update["type"] == "update"
    assert update["reset"] is True
    dash._handle_custom_msg({"type": "hello", "plotly": False}, [])
    assert [m["type"] for m, _ in sent[2:]] == ["update"]


def test_history_already_in_the_stream_is_shown(stream: Stream) -> None:
    stream.extend([http() for _ in range(5)])
    # two-second health windows: the lights are judged soon after records arrive
    d = Dashboard(stream, window=60, health=HealthConfig(window_s=2.0))
    try:
        assert sum(s["n"] for s in d.summaries()) == 5
    finally:
        d.close()


def test_close_stops_following_the_stream(stream: Stream) -> None:
    d = Dashboard(stream)
    assert stream.stats["subscribers"] == 1
    d.close()
    assert stream.stats["subscribers"] == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 5}, "window"),
        ({"window": 2000}, "window"),
        ({"sources": ["server", "nope"]}, "sources"),
        ({"every": 0.1}, "every"),
    ],
)
def test_bad_options_name_the_field(stream: Stream, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Dashboard(stream, **kwargs)


def test_alert_records_join_the_alerts_list(stream: Stream, dash: Dashboard) -> None:
    stream.push(
        {
            "time": datetime.now(UTC),
            "source": "server",
            "kind": "alert",
            "name": "leak",
            "tags": {"level": "critical", "message": "RSS grows"},
        }
    )
    wait_for(lambda: any(a["message"] == "RSS grows" for a in dash.alerts.items))


def test_freeze_keeps_the_data_in_static_html(stream: Stream, dash: Dashboard) -> None:
    stream.extend([http(duration_ms=123.5)])
    wait_for(lambda: dash.aggregator.stats["records"] == 1)
    frozen = dash.freeze(png=False)
    assert frozen.png is None
    assert frozen.html.count("Plotly.newPlot") == 7
    assert "123.5" in frozen.html
    assert sorted(frozen.figures) == sorted(dash.figures())
