"""The health engine on synthetic records: states, alerts, their records, bounds."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pytest
from health_support import T0, alerts, at, http, polls, steady, transitions

from perfnb.analysis.health import ALERTS, STATES, HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.schema import Record, arrow_schema, validate_record
from perfnb.stream import Stream

FAST = HealthConfig(window_s=1, baseline_min_windows=5)


def with_fault(fault: str, *, onset: float = 30.0, end: float = 60.0) -> list[Record]:
    """Steady traffic on two routes, polls from two clients, and a fault from ``onset``."""
    rng = random.Random(11)
    records = []
    t = 0.0
    while t < end + 30.0:
        faulty = onset <= t < end
        for route in ("/api/cards", "/api/presence"):
            status, duration = 200, rng.uniform(5, 15)
            if faulty and fault == "errors" and rng.random() < 0.4:
                status = 500
            if faulty and fault == "slow":
                duration += 600.0
            if faulty and fault == "timeouts" and route == "/api/cards" and rng.random() < 0.3:
                status, duration = 504, 30_000.0
            records.append(http(t, route=route, status=status, duration=duration))
        t += 0.05
    records += polls("a", 0.0, end + 30.0, 2.0) + polls("b", 1.0, end + 30.0, 2.0)
    return records


def test_a_clean_run_raises_nothing_and_settles_in_the_best_states() -> None:
    out = HealthEngine(FAST).replay(with_fault("none"))
    assert alerts(out) == []
    assert transitions(out, "serverResponse") == [("unknown", "good")]
    assert transitions(out, "apiPolling") == [("unknown", "healthy")]


@pytest.mark.parametrize(
    ("fault", "alert", "routes", "state"),
    [
        ("errors", "error_rate", {"/api/cards", "/api/presence"}, None),
        ("slow", "degradation", {"/api/cards", "/api/presence"}, ("serverResponse", "slow")),
        ("timeouts", "timeout", {"/api/cards"}, ("serverResponse", "timeout")),
    ],
)
def test_each_fault_is_named_on_its_routes_and_cleared(
    fault: str, alert: str, routes: set[str], state: tuple[str, str] | None
) -> None:
    engine = HealthEngine(FAST)
    out = engine.replay(with_fault(fault))
    raised = alerts(out, alert)
    assert {r["route"] for r in raised} == routes
    for record in raised:
        latency = (record["time"] - at(30.0)).total_seconds()
        assert latency <= (FAST.enter_windows + 1) * FAST.window_s
        assert record["tags"]["reason"]
    assert {r["route"] for r in alerts(out, alert, state="cleared")} == routes
    assert engine.active_alerts == []
    if state is not None:
        name, value = state
        assert ("good", value) in transitions(out, name)
        assert (value, "good") in transitions(out, name)


def test_output_records_fit_the_schema_and_the_arrow_schema() -> None:
    out = HealthEngine(FAST).replay(with_fault("errors"))
    assert out
    for record in out:
        assert validate_record(record) == record
        assert record["source"] == "perfnb"
        if record["kind"] == "health":
            assert record["name"] in STATES
            assert record["unit"] == "state"
            assert set(record["tags"]) == {"state", "previous", "reason"}
        else:
            assert record["name"] in ALERTS
            assert {"state", "severity", "reason"} <= set(record["tags"])
    frame = pd.DataFrame(out)
    assert set(frame.columns) <= set(arrow_schema().names)


def test_own_records_and_load_traffic_are_ignored() -> None:
    records = with_fault("errors")
    for r in records:
        r["run_id"] = "load-1"
    own = [http(t * 0.01, status=500, source="perfnb") for t in range(3000)]
    assert HealthEngine(FAST).replay(records + own) == []
    included = HealthEngine(FAST.replace(include_load=True)).replay(records)
    assert alerts(included, "error_rate")


def test_client_view_fills_in_for_a_missing_server_view() -> None:
    records = steady(40, every=0.05)
    records += [
        http(30 + i * 0.05, route="/api/export", status=0, source="client", error_type="timeout")
        for i in range(100)
    ]
    out = HealthEngine(FAST).replay(records)
    assert [r["route"] for r in alerts(out, "timeout")] == ["/api/export"]


def vital(t: float, name: str, value: float) -> Record:
    return {"time": at(t), "source": "browser", "kind": "vital", "name": name, "value": value}


def long_frame(t: float, ms: float) -> Record:
    return {
        "time": at(t),
        "source": "browser",
        "kind": "render",
        "name": "long-animation-frame",
        "value": ms,
        "unit": "ms",
    }


def test_client_performance_from_vitals_and_long_frames() -> None:
    good = [vital(t, "LCP", 1200.0) for t in range(0, 60, 3)]
    out = HealthEngine(FAST).replay(good)
    assert transitions(out, "clientPerformance") == [("unknown", "optimal")]
    poor = good + [vital(60 + t, "LCP", 5200.0) for t in range(0, 120, 2)]
    out = HealthEngine(FAST).replay(poor)
    states = [s for _, s in transitions(out, "clientPerformance")]
    assert states[-1] == "poor"
    last = [r for r in out if r["name"] == "clientPerformance"][-1]
    assert "LCP" in last["tags"]["reason"]
    frames = good + [long_frame(60 + t * 0.5, 120.0) for t in range(200)]
    out = HealthEngine(FAST).replay(frames)
    last = [r for r in out if r["name"] == "clientPerformance"][-1]
    assert last["tags"]["state"] == "poor"
    assert "long frames/min" in last["tags"]["reason"]


def test_routes_are_bounded() -> None:
    config = HealthConfig(window_s=1, max_routes=20, min_requests=1)
    engine = HealthEngine(config)
    records = [http(i * 0.01, route=f"/r/{i}") for i in range(5000)]
    engine.replay(records)
    assert len(engine._routes) <= 21


def test_replay_takes_a_frame_like_a_list() -> None:
    records = with_fault("errors")
    with Stream(max_age=10**9, clock=lambda: at(200).timestamp()) as stream:
        stream.extend(records)
        frame = stream.frame()
    from_list = HealthEngine(FAST).replay(records)
    from_frame = HealthEngine(FAST).replay(frame.sample(frac=1.0, random_state=1))
    assert [(r["name"], r["tags"]["state"]) for r in from_frame] == [
        (r["name"], r["tags"]["state"]) for r in from_list
    ]


def test_replay_can_stretch_sped_up_traffic() -> None:
    fast = polls("c", 0.0, 60.0, 0.2)  # a client driven 10× faster than life
    assert alerts(HealthEngine().replay(fast), "runaway")
    assert alerts(HealthEngine().replay(fast, stretch=10.0)) == []


def test_observe_follows_the_clock() -> None:
    now = [T0.timestamp()]
    engine = HealthEngine(FAST, clock=lambda: now[0])
    out: list[Any] = []
    for second in range(40):
        now[0] = T0.timestamp() + second
        status = 500 if second >= 20 else 200
        batch = [http(second + i * 0.1, status=status) for i in range(10)]
        out += engine.observe(batch)
    assert alerts(out, "error_rate")
    assert engine.states["serverResponse"].state == "good"
    assert any(a["name"] == "error_rate" for a in engine.active_alerts)
    # time moves on without records: nothing is judged from empty windows
    now[0] += 60
    assert engine.tick() == []


def test_records_that_do_not_fit_are_counted_and_dropped() -> None:
    now = [T0.timestamp()]
    engine = HealthEngine(FAST, clock=lambda: now[0])
    bad: list[Any] = [
        {"source": "server", "kind": "http", "route": "/api/poll", "client": "c"},  # no time
        {"time": at(0), "source": "server", "kind": "http", "status": "500"},  # a str status
    ]
    assert engine.observe([*bad, http(0.0)]) == []
    assert engine.stats["invalid"] == 2
    assert engine.stats["records"] == 3
