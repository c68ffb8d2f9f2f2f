"""Per-second bucketing: what the dashboard counts, under which filters."""

from __future__ import annotations

import doctest
import importlib
from datetime import UTC, datetime
from typing import Any

import pytest

from perfnb.widgets.aggregate import Aggregator, is_error

NOW = 1_800_000_000.0


def rec(t: float, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": datetime.fromtimestamp(t, UTC),
        "source": "server",
        "kind": "http",
        "route": "/api/x",
        "status": 200,
        "duration_ms": 10.0,
    }
    base.update(fields)
    return base


@pytest.fixture
def agg() -> Aggregator:
    return Aggregator(max_window=60, clock=lambda: NOW)


def test_percentiles_and_throughput_are_per_second_and_route(agg: Aggregator) -> None:
    agg.add_records([rec(NOW - 5.5, duration_ms=float(d)) for d in range(1, 101)])
    agg.add_records([rec(NOW - 4.2, route="/api/y", duration_ms=7.0)])
    first, second = agg.summaries()
    assert first["t"] == int(NOW - 5.5)
    assert first["n"] == 100
    p50, p95, p99 = first["lat"]["/api/x"]
    assert p50 == pytest.approx(50.5)
    assert p95 == pytest.approx(95.05)
    assert p99 == pytest.approx(99.01)
    assert second["lat"] == {"/api/y": [7.0, 7.0, 7.0]}
    assert second["rps"] == {"/api/y": 1}


def test_errors_are_5xx_missing_answers_and_raised_errors_not_4xx(agg: Aggregator) -> None:
    agg.add_records(
        [
            rec(NOW - 1, status=500),
            rec(NOW - 1, status=0),
            rec(NOW - 1, status=404),
            rec(NOW - 1, status=200, error_type="timeout"),
            rec(NOW - 1),
        ]
    )
    (s,) = agg.summaries()
    assert (s["n"], s["err"]) == (5, 3)
    assert is_error(None, None) is False


def test_load_and_perfnb_traffic_are_out_by_default_and_back_in_on_request(
    agg: Aggregator,
) -> None:
    agg.add_records(
        [
            rec(NOW - 2),
            rec(NOW - 2, run_id="run-1"),
            rec(NOW - 2, source="perfnb", route="/api/performance-metrics"),
        ]
    )
    assert agg.summaries()[0]["n"] == 1
    agg.set_filters(exclude_load=False)
    assert agg.summaries()[0]["n"] == 2
    agg.set_filters(exclude_perfnb=False)
    assert agg.summaries()[0]["n"] == 3


def test_auto_sources_count_the_server_once_not_the_client_twice(agg: Aggregator) -> None:
    agg.add_records([rec(NOW - 2, source="client", duration_ms=30.0, server_ms=10.0)])
    assert agg.summaries()[0]["n"] == 1  # only a client's view: it is counted
    agg.add_records([rec(NOW - 2, duration_ms=9.0)])
    (s,) = agg.summaries()
    assert s["n"] == 1
    assert s["lat"]["/api/x"][0] == 9.0
    assert (s["srv"], s["net"]) == (10.0, 20.0)  # the split still comes from the client
    agg.set_filters(sources=["client", "server"])
    assert agg.summaries()[0]["n"] == 2


def test_route_filter_and_routes_seen(agg: Aggregator) -> None:
    agg.add_records([rec(NOW - 3), rec(NOW - 3, route="/api/poll")])
    agg.set_filters(routes=["/api/poll"])
    assert agg.summaries()[0]["rps"] == {"/api/poll": 1}
    assert agg.routes == ["/api/poll", "/api/x"]


def test_process_vitals_and_polling_cadence(agg: Aggregator) -> None:
    agg.add_records(
        [
            {
                "time": datetime.fromtimestamp(NOW - 3, UTC),
                "source": "server",
                "kind": "process",
                "name": "rss_bytes",
                "value": 64 * 1024 * 1024,
            },
            {
                "time": datetime.fromtimestamp(NOW - 3, UTC),
                "source": "server",
                "kind": "process",
                "name": "cpu_percent",
                "value": 12.5,
            },
            {
                "time": datetime.fromtimestamp(NOW - 3, UTC),
                "source": "browser",
                "kind": "vital",
                "name": "LCP",
                "value": 1200.0,
            },
            rec(NOW - 7.0, route="/api/poll", client="a"),
            rec(NOW - 5.0, route="/api/poll", client="a"),
            rec(NOW - 3.0, route="/api/poll", client="a"),
        ]
    )
    by_t = {s["t"]: s for s in agg.summaries()}
    s = by_t[int(NOW - 3)]
    assert (s["rss"], s["cpu"], s["vit"]) == (64.0, 12.5, {"LCP": 1200.0})
    assert s["polls"] == 1
    assert s["poll"] == pytest.approx(2.0)
    assert "poll" not in by_t[int(NOW - 7)]  # the first poll of a client has no interval


def test_old_records_are_dropped_and_counted(agg: Aggregator) -> None:
    assert agg.add_records([rec(NOW - 120), rec(NOW - 1)]) == 1
    assert agg.stats["late"] == 1


def test_take_dirty_returns_only_changed_seconds(agg: Aggregator) -> None:
    agg.add_records([rec(NOW - 3), rec(NOW - 2)])
    assert [s["t"] for s in agg.take_dirty()] == [int(NOW - 3), int(NOW - 2)]
    assert agg.take_dirty() == []
    agg.add_records([rec(NOW - 2)])
    assert [s["n"] for s in agg.take_dirty()] == [2]


def test_frames_and_records_give_the_same_summaries() -> None:
    from perfnb.stream import Stream

    records = [
        rec(NOW - 4 + i * 0.1, duration_ms=float(i), status=500 if i % 7 == 0 else 200)
        for i in range(30)
    ]
    by_records = Aggregator(max_window=60, clock=lambda: NOW)
    by_records.add_records(records)
    with Stream(max_age=10**9, clock=lambda: NOW) as stream:
        stream.extend(records)
        frame = stream.frame()
    by_frame = Aggregator(max_window=60, clock=lambda: NOW)
    assert by_frame.add_frame(frame) == 30
    assert by_frame.summaries() == by_records.summaries()


@pytest.mark.parametrize("module", ["perfnb.widgets.aggregate", "perfnb.widgets.buckets"])
def test_aggregate_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
