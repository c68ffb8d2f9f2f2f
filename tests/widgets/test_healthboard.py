"""Per-endpoint health rules, and the board's monitoring controls against the real demo app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from perfnb.errors import ConfigError
from perfnb.stream import Stream
from perfnb.widgets.healthboard import HealthBoard, endpoint_health
from perfnb.widgets.lights import HealthRules

RULES = HealthRules()


@pytest.mark.parametrize(
    ("errors", "durations", "state"),
    [
        (0, [5.0] * 100, "good"),
        (10, [5.0] * 100, "degraded"),
        (30, [5.0] * 100, "failing"),
        (0, [5.0] * 90 + [500.0] * 10, "slow"),
    ],
)
def test_endpoint_states(errors: int, durations: list[float], state: str) -> None:
    fig = {
        "count": len(durations),
        "errors": errors,
        "timeouts": 0,
        "durations": np.array(durations),
    }
    assert endpoint_health(fig, RULES)["state"] == state


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream() as s:
        yield s


def test_endpoints_are_listed_with_reasons(stream: Stream) -> None:
    board = HealthBoard(stream, every=0.5)
    try:
        stream.extend(
            [
                {
                    "time": datetime.now(UTC),
                    "source": "server",
                    "kind": "http",
                    "route": "/a",
                    "status": 500 if i < 5 else 200,
                    "duration_ms": 3.0,
                }
                for i in range(10)
            ]
        )
        deadline = time.monotonic() + 10
        while not board.endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        (row,) = board.endpoints
        assert (row["route"], row["state"], row["errors"]) == ("/a", "failing", 5)
        assert "50%" in row["reason"]
    finally:
        board.close()


def test_controls_without_an_app_say_why(stream: Stream) -> None:
    board = HealthBoard(stream)
    try:
        with pytest.raises(ConfigError, match="app_url"):
            board.set_monitoring(enabled=False)
        with pytest.raises(ConfigError, match="kinds"):
            HealthBoard(stream, app_url="http://127.0.0.1:9").set_monitoring(kinds=["nope"])
    finally:
        board.close()


@pytest.mark.slow
def test_monitoring_controls_reach_the_demo_app(stream: Stream) -> None:
    from perfnb.widgets.apps import DemoApp

    with DemoApp.start() as app:
        board = HealthBoard(stream, app_url=app.url)
        try:
            assert board.control["enabled"] is True
            state = board.set_monitoring(enabled=False, kinds=["http"], sample=0.5)
            assert (state["enabled"], state["kinds"], state["sample"]) == (False, ["http"], 0.5)
            board._handle_custom_msg({"type": "control", "enabled": True, "kinds": []}, [])
            assert board.control["enabled"] is True
            assert board.control["kinds"] is None
            assert board.control_error == ""
        finally:
            board.close()
