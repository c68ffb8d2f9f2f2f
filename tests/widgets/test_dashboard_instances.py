"""The Dashboard's filter by app instance and host, through its traits, with no kernel."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import perfnb.widgets.instances
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError
from perfnb.stream import Stream
from perfnb.widgets.aggregate import Aggregator
from perfnb.widgets.dashboard import Dashboard
from perfnb.widgets.instances import OTHER_INSTANCE, host_of, keep_rows

# two processes on host web_1, one on web_2 (names as perfnb.server.fleet makes them)
A1 = "web_1-101-aaaaaaaaaaaa"
A2 = "web_1-102-bbbbbbbbbbbb"
B1 = "web_2-201-cccccccccccc"
NOW = 1_800_000_000.0

Sent = list[tuple[dict[str, Any], list[Any]]]


def http(instance: str | None, *, t: datetime | None = None, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "time": t or datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "route": "/api/x",
        "status": 200,
        "duration_ms": 12.0,
    }
    if instance is not None:
        rec["tags"] = {"instance": instance}
    rec.update(fields)
    return rec


def rss(instance: str, mb: float, *, t: datetime | None = None) -> dict[str, Any]:
    return {
        "time": t or datetime.now(UTC),
        "source": "server",
        "kind": "process",
        "name": "rss_bytes",
        "value": mb * 1024 * 1024,
        "tags": {"instance": instance},
    }


def fleet() -> list[dict[str, Any]]:
    """3 requests on A1, 2 on A2, 4 on B1 and 1 naming no instance: 10 in all."""
    return (
        [http(A1) for _ in range(3)]
        + [http(A2) for _ in range(2)]
        + [http(B1, status=500) for _ in range(4)]
        + [http(None)]
    )


def shown(dash: Dashboard) -> int:
    return sum(s["n"] for s in dash.summaries())


@pytest.fixture
def stream() -> Iterator[Stream]:
    with Stream() as s:
        s.extend(fleet())
        yield s


@pytest.fixture
def sent() -> Sent:
    return []


@pytest.fixture
def dash(stream: Stream, sent: Sent) -> Iterator[Dashboard]:
    d = Dashboard(stream, window=60, health=HealthConfig(window_s=2.0))
    d.send = lambda content, buffers=None: sent.append((content, buffers or []))  # type: ignore[method-assign]
    yield d
    d.close()


def last_reset(sent: Sent) -> dict[str, Any]:
    # the health ticker may send ordinary updates at any moment: take the last reset
    return next(m for m, _ in reversed(sent) if m["reset"])


def test_every_instance_counts_when_no_filter_is_set(dash: Dashboard) -> None:
    assert dash.instances == []
    assert shown(dash) == 10


def test_one_instance_shows_only_that_process(stream: Stream) -> None:
    d = Dashboard(stream, window=60, instances=[A2])
    try:
        assert shown(d) == 2
        assert sum(s["err"] for s in d.summaries()) == 0
    finally:
        d.close()


def test_a_host_shows_every_process_of_that_host(stream: Stream) -> None:
    d = Dashboard(stream, window=60, instances=["web_1"])
    try:
        assert shown(d) == 5
    finally:
        d.close()
    d = Dashboard(stream, window=60, instances=["web_2", A1])
    try:
        assert shown(d) == 7
        assert sum(s["err"] for s in d.summaries()) == 4
    finally:
        d.close()


def test_a_live_change_of_the_filter_regroups_the_window_already_held(
    dash: Dashboard, sent: Sent
) -> None:
    dash.instances = [A1]
    msg = last_reset(sent)
    assert sum(s["n"] for s in msg["seconds"]) == 3
    assert shown(dash) == 3
    dash.instances = ["web_2"]
    assert sum(s["n"] for s in last_reset(sent)["seconds"]) == 4
    dash.instances = []
    assert sum(s["n"] for s in last_reset(sent)["seconds"]) == 10


def test_records_naming_no_instance_show_only_when_empty_is_chosen(
    dash: Dashboard, sent: Sent
) -> None:
    dash.instances = ["web_2"]
    assert shown(dash) == 4
    dash.instances = ["web_2", ""]
    assert shown(dash) == 5
    dash.instances = [""]
    assert shown(dash) == 1


def test_the_update_lists_the_instances_seen_by_host(dash: Dashboard, sent: Sent) -> None:
    dash.instances = [A1]  # the list is every instance seen, whatever the filter
    msg = last_reset(sent)
    assert msg["instances"] == {"": [""], "web_1": [A1, A2], "web_2": [B1]}


def test_records_arriving_live_are_split_by_instance(
    stream: Stream, dash: Dashboard, sent: Sent
) -> None:
    dash.instances = [B1]
    stream.extend([http(B1), http(A1), http(A1)])
    dash._subscription.flush()  # type: ignore[union-attr]
    assert shown(dash) == 5
    dash.instances = ["web_1"]
    assert shown(dash) == 7


def test_health_follows_the_filter() -> None:
    # web_2 answers slowly, web_1 fast; both over the last few seconds
    start = datetime.now(UTC).timestamp() - 5
    with Stream() as stream:
        for i in range(25):
            t = datetime.fromtimestamp(start + i * 0.2, UTC)
            stream.extend([http(A1, t=t, duration_ms=10.0), http(B1, t=t, duration_ms=900.0)])
        health = HealthConfig(window_s=2.0, enter_windows=1)
        d = Dashboard(stream, window=60, health=health, instances=["web_2"])
        d.send = lambda content, buffers=None: None  # type: ignore[method-assign]
        try:
            d.push_update(reset=True)
            assert d.health["serverResponse"]["state"] == "slow"
            d.instances = [A1]
            assert d.health["serverResponse"]["state"] == "good"
        finally:
            d.close()


def test_the_overhead_readout_follows_the_filter() -> None:
    def overhead(instance: str, us: float) -> dict[str, Any]:
        return {
            "time": datetime.now(UTC),
            "source": "perfnb",
            "kind": "overhead",
            "name": "middleware_us",
            "value": us,
            "unit": "us",
            "tags": {"instance": instance},
        }

    with Stream() as own:
        # 2 ms of server time on each host; perfnb took 10 µs on web_1, 50 µs on web_2
        own.extend([http(A1, duration_ms=2.0), overhead(A1, 10.0)])
        own.extend([http(B1, duration_ms=2.0), overhead(B1, 50.0)])
        d = Dashboard(own, window=60)
        d.send = lambda content, buffers=None: None  # type: ignore[method-assign]
        try:
            d.instances = ["web_1"]
            assert "0.50% of server time" in d.readouts["overhead"]
            d.instances = [B1]
            assert "2.50% of server time" in d.readouts["overhead"]
            assert d.readout_errors == 0
        finally:
            d.close()


def test_memory_is_each_process_s_own_or_the_largest_of_several() -> None:
    t = datetime.fromtimestamp(NOW - 2, UTC)
    agg = Aggregator(max_window=60, clock=lambda: NOW)
    agg.add_records([rss(A1, 100.0, t=t), rss(A2, 300.0, t=t), rss(B1, 200.0, t=t)])
    assert agg.summaries()[0]["rss"] == 300.0
    agg.set_filters(instances=[A1])
    assert agg.summaries()[0]["rss"] == 100.0
    agg.set_filters(instances=["web_2"])
    assert agg.summaries()[0]["rss"] == 200.0
    assert agg.window_figures(10)["rss"] == [200.0]


def test_instances_past_the_bound_count_as_other_and_leave_with_the_window() -> None:
    now = [NOW]
    agg = Aggregator(max_window=60, max_instances=2, clock=lambda: now[0])
    t = datetime.fromtimestamp(NOW - 1, UTC)
    agg.add_records([http(A1, t=t), http(A2, t=t), http(B1, t=t)])
    assert agg.instances == [OTHER_INSTANCE, A1, A2]
    now[0] += 120
    agg.add_records([http(B1, t=datetime.fromtimestamp(now[0] - 1, UTC))])
    assert agg.instances == [B1]


def test_frames_and_records_give_the_same_instances() -> None:
    t = datetime.fromtimestamp(NOW - 3, UTC)
    records = [http(A1, t=t), http(B1, t=t), http(None, t=t)]
    by_records = Aggregator(max_window=60, clock=lambda: NOW)
    by_records.add_records(records)
    with Stream(max_age=10**9, clock=lambda: NOW) as stream:
        stream.extend(records)
        frame = stream.frame()
    by_frame = Aggregator(max_window=60, clock=lambda: NOW)
    by_frame.add_frame(frame)
    assert by_frame.instances == by_records.instances == ["", A1, B1]
    assert len(keep_rows(frame, frozenset({"web_2", ""}))) == 2


def test_host_of_names_that_do_not_follow_the_pattern() -> None:
    assert host_of("web_1-101-aaaaaaaaaaaa") == "web_1"
    assert host_of("single") == "single"
    assert host_of("") == ""


def test_a_filter_that_is_not_names_is_refused(stream: Stream) -> None:
    with pytest.raises(ConfigError, match="instances"):
        Dashboard(stream, instances=[1])  # type: ignore[list-item]


def test_instances_docstring_examples() -> None:
    result = doctest.testmod(perfnb.widgets.instances)
    assert result.attempted > 0
    assert result.failed == 0
