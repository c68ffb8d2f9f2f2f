"""The dashboard's readouts (overhead share, last load run's bottleneck) and the load
panel's bottleneck columns, with a real Stream and no kernel."""

from __future__ import annotations

import doctest
import importlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from perfnb.load.bottleneck import Level, RouteFigures, find_bottleneck
from perfnb.schema import Record
from perfnb.stream import Stream
from perfnb.widgets.dashboard import Dashboard
from perfnb.widgets.loadpanel import _bottleneck_cells
from perfnb.widgets.readouts import Readouts


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _load_run(run_id: str, t0: int) -> list[Record]:
    """A run whose rate climbs 10 → 40 req/s per route; /slow's p95 grows with it."""
    out: list[Record] = []
    for i in range(12):
        when = datetime.fromtimestamp(t0 + i, tz=UTC)
        for route in ("/fast", "/slow"):
            n = 10.0 if i < 6 else 40.0
            p95 = 300.0 if route == "/slow" and i >= 6 else 10.0
            for name, value in (("requests", n), ("errors", 0.0), ("p95_ms", p95)):
                out.append(
                    {
                        "time": when,
                        "source": "load",
                        "kind": "load",
                        "route": route,
                        "method": "GET",
                        "name": name,
                        "value": value,
                        "run_id": run_id,
                    }
                )
    out.append(
        {
            "time": datetime.fromtimestamp(t0 + 13, tz=UTC),
            "source": "load",
            "kind": "load",
            "name": "run_stop",
            "run_id": run_id,
            "tags": {"reason": "completed"},
        }
    )
    return out


def test_readouts_judge_a_run_when_it_stops() -> None:
    r = Readouts(clock=lambda: 0.0)
    records = _load_run("run-a", 1_000)
    assert not r.take(records[:-1])
    assert r.take(records[-1:])
    assert r.bottleneck is not None
    assert r.bottleneck.route == "GET /slow"
    assert r.text()["bottleneck"].startswith("load run run-a: bottleneck: GET /slow")
    assert "no data" in r.text()["overhead"]


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream(max_age=10**9) as s:
        yield s


def test_the_dashboard_shows_overhead_and_the_last_runs_bottleneck(stream: Stream) -> None:
    dash = Dashboard(stream, window=60)
    dash.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    try:
        now = datetime.now(UTC)
        stream.extend(
            [
                {
                    "time": now,
                    "source": "server",
                    "kind": "http",
                    "route": "/x",
                    "status": 200,
                    "duration_ms": 2.0,
                },
                {
                    "time": now,
                    "source": "perfnb",
                    "kind": "overhead",
                    "name": "middleware_us",
                    "value": 10.0,
                    "unit": "us",
                },
            ]
        )
        wait_for(lambda: "0.50% of server time" in dash.readouts.get("overhead", ""))
        stream.extend(_load_run("run-b", int(time.time()) - 20))
        wait_for(lambda: "GET /slow" in dash.readouts.get("bottleneck", ""))
        assert any("GET /slow degraded first" in a["message"] for a in dash.alerts.items)
        assert dash.readout_errors == 0
    finally:
        dash.close()


def test_the_panel_rows_say_where_each_route_degraded() -> None:
    def fig(p95: float, db: float) -> RouteFigures:
        return RouteFigures(100, 0, p95, {"db": db, "app": 1.0})

    b = find_bottleneck(
        [
            Level(5, {"GET /a": fig(10.0, 1.0), "GET /b": fig(10.0, 1.0)}),
            Level(10, {"GET /a": fig(100.0, 90.0), "GET /b": fig(11.0, 1.0)}),
        ],
        unit="users",
    )
    assert _bottleneck_cells(b, "GET /a") == {"degrades_at": "10 users (first)", "time_in": "db"}
    assert _bottleneck_cells(b, "GET /b") == {"degrades_at": "held", "time_in": ""}
    assert _bottleneck_cells(b, "ALL") == {"degrades_at": "", "time_in": ""}
    assert _bottleneck_cells(None, "GET /a") == {}


@pytest.mark.parametrize("module", ["perfnb.widgets.readouts"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
