"""The health engine's states as the widgets' lights, and on the health board."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from perfnb.analysis.health import HealthEngine, HealthState
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.stream import Stream
from perfnb.widgets.healthboard import HealthBoard
from perfnb.widgets.lights import engine_lights


def test_states_map_to_levels() -> None:
    lights = engine_lights(
        {
            "apiPolling": HealthState("failing", "30% of 40 polls failed", 0.0),
            "serverResponse": HealthState("slow", "p95 800 ms", 0.0),
            "clientPerformance": HealthState("optimal", "LCP 900 ms at p75", 0.0),
        }
    )
    assert {k: v["level"] for k, v in lights.items()} == {
        "apiPolling": "bad",
        "serverResponse": "warn",
        "clientPerformance": "ok",
    }
    assert lights["apiPolling"]["reason"] == "30% of 40 polls failed"
    unknown = engine_lights(HealthEngine().states)
    assert {v["state"] for v in unknown.values()} == {"unknown"}


def test_the_board_shows_the_engines_states_and_open_alerts() -> None:
    now = datetime.now(UTC)
    start = now - timedelta(seconds=25)
    with Stream() as stream:
        stream.extend(
            [
                {
                    "time": start + timedelta(seconds=0.25 * i),
                    "source": "server",
                    "kind": "http",
                    "route": "/api/poll",
                    "client": "tab-9",
                    "status": 200,
                    "duration_ms": 3.0,
                }
                for i in range(100)
            ]
        )
        board = HealthBoard(stream, health=HealthConfig(window_s=2), clock=time.time)
        try:
            assert board.lights["apiPolling"]["state"] == "degraded"
            assert "running away" in board.lights["apiPolling"]["reason"]
            (row,) = board.endpoints
            assert row["route"] == "/api/poll"
            assert "alert: runaway" in row["reason"]
            assert board.engine.active_alerts[0]["client"] == "tab-9"
        finally:
            board.close()
