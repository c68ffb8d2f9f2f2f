"""The Dashboard's lights and alerts come from the health engine (real Stream, no kernel)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.stream import Stream
from perfnb.widgets.dashboard import Dashboard
from perfnb.widgets.healthboard import HealthBoard
from perfnb.widgets.lights import AlertLog
from perfnb.widgets.livehealth import LiveHealth

FAST = HealthConfig(window_s=1.0, enter_windows=1, leave_windows=1, min_requests=5)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def http(duration_ms: float, *, status: int = 200, route: str = "/api/x") -> dict[str, Any]:
    return {
        "time": datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
    }


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream() as s:
        yield s


@pytest.fixture
def dash(stream: Stream) -> Iterator[Dashboard]:
    d = Dashboard(stream, window=60, health=FAST)
    d.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    yield d
    d.close()


def board_state(board: HealthBoard, name: str) -> str:
    return str(board.lights.get(name, {}).get("state", ""))


def light(dash: Dashboard, name: str) -> str:
    return dash.health.get(name, {}).get("state", "")


def test_lights_use_the_engine_thresholds_not_the_old_simple_rules(
    stream: Stream, dash: Dashboard
) -> None:
    # p95 400 ms: "slow" under the old 300 ms rule, "good" under the engine's 500 ms
    stream.extend([http(400.0) for _ in range(20)])
    wait_for(lambda: light(dash, "serverResponse") == "good")
    assert "slow at 500 ms" in dash.health["serverResponse"]["reason"]
    stream.extend([http(900.0) for _ in range(20)])
    wait_for(lambda: light(dash, "serverResponse") == "slow")
    assert dash.last_update is not None
    assert dash.last_update["health"]["serverResponse"]["state"] == "slow"


def test_same_states_and_reasons_as_the_health_board(stream: Stream, dash: Dashboard) -> None:
    board = HealthBoard(stream, health=FAST, every=0.5)
    board.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    try:
        # the board judges a window only when records arrive after it: keep polling
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            stream.extend([http(120.0, route="/api/poll") for _ in range(10)])
            time.sleep(0.3)
            if light(dash, "serverResponse") == board_state(board, "serverResponse") == "good":
                break
        assert light(dash, "serverResponse") == board_state(board, "serverResponse") == "good"
        assert dash.health["serverResponse"]["level"] == board.lights["serverResponse"]["level"]
        assert light(dash, "apiPolling") == board_state(board, "apiPolling") == "healthy"
    finally:
        board.close()


def test_engine_alerts_and_transitions_join_the_alert_list(stream: Stream, dash: Dashboard) -> None:
    stream.extend([http(30.0, status=504, route="/api/cards") for _ in range(20)])
    wait_for(lambda: any("timeout raised on /api/cards" in a["message"] for a in dash.alerts.items))
    alert = next(a for a in dash.alerts.items if "timeout raised" in a["message"])
    assert alert["level"] == "critical"
    assert alert["source"] == "perfnb"
    wait_for(lambda: light(dash, "serverResponse") == "timeout")
    assert any(a["message"].startswith("serverResponse timeout:") for a in dash.alerts.items)


def test_load_traffic_is_left_out_unless_asked_for(stream: Stream, dash: Dashboard) -> None:
    load = [{**http(900.0), "run_id": "r1"} for _ in range(20)]
    stream.extend(load)
    stream.extend([http(10.0) for _ in range(20)])
    wait_for(lambda: light(dash, "serverResponse") == "good")
    dash.exclude_load = False  # replays the stream's history with load traffic judged
    assert dash.live_health.config.include_load
    stream.extend([{**http(900.0), "run_id": "r1"} for _ in range(40)])
    wait_for(lambda: light(dash, "serverResponse") == "slow")


def test_an_alert_seen_twice_is_listed_once() -> None:
    # the engine's own alert and the same alert pushed back into the stream by a watcher
    log = AlertLog(clock=lambda: 0.0)
    live = LiveHealth(FAST, alerts=log, clock=lambda: 100.0, tick=None)
    record = {
        "time": datetime.fromtimestamp(100.0, UTC),
        "source": "perfnb",
        "kind": "alert",
        "name": "timeout",
        "tags": {"level": "critical", "message": "timeout raised on /a: 5 of 5"},
    }
    live.add_alert_record(record)
    live.add_alert_record({**record, "time": datetime.fromtimestamp(101.0, UTC)})
    assert [a["message"] for a in log.items] == ["timeout raised on /a: 5 of 5"]
    live.add_alert_record({**record, "tags": {"level": "bogus", "message": "other"}})
    assert log.items[0]["level"] == "warning"


def test_a_bad_history_frame_does_not_stop_live_health() -> None:
    live = LiveHealth(FAST, alerts=AlertLog(), tick=None)
    live.replay(object())
    assert live.errors == 1
    assert live.lights()["serverResponse"]["state"] == "unknown"
