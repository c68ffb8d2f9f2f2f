"""Polling runaway detection on synthetic poll records (simulated clock)."""

from __future__ import annotations

import random

from health_support import alerts, at, http, polls

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.runaway import PollTracker
from perfnb.schema import Record, validate_record


def front_end_runaway(client: str, onset: float, end: float) -> list[Record]:
    """The demo page's bug: every answer starts one more 2 s loop (up to 32 loops)."""
    out = []
    loops = [onset]  # next fire time of each loop
    while loops and min(loops) < end:
        t = min(loops)
        i = loops.index(t)
        out.append(http(t, route="/api/poll", client=client, duration=4.0))
        loops[i] = t + 2.0 + 0.004
        if len(loops) < 32:
            loops.append(t + 2.0 + 0.005)
    return out


def test_a_steady_client_is_never_a_runaway() -> None:
    rng = random.Random(3)
    records = []
    t = 0.0
    while t < 3600:
        records.append(http(t, route="/api/poll", client="calm", duration=rng.uniform(2, 40)))
        t += rng.choice([2.0, 2.0, 2.0, 5.0]) + rng.uniform(0.0, 0.1)
    out = HealthEngine().replay(records)
    assert alerts(out) == []


def test_runaway_caught_within_three_polling_periods_and_named() -> None:
    calm = polls("tab-1", 0.0, 60.0, 2.0)
    onset = 60.0
    wild = front_end_runaway("tab-1", onset, 120.0)
    other = polls("tab-2", 0.5, 120.0, 2.0)
    out = HealthEngine().replay(calm + wild + other)
    (raised,) = alerts(out, "runaway")
    assert raised["client"] == "tab-1"
    assert raised["route"] == "/api/poll"
    assert "tab-1" in raised["tags"]["reason"]
    assert "expected every 2–5 s" in raised["tags"]["reason"]
    assert raised["tags"]["severity"] == "critical"
    latency = (raised["time"] - at(onset)).total_seconds()
    assert latency <= 3 * 2.0, f"runaway found {latency:.1f} s after onset"
    validate_record(raised)
    # apiPolling turns degraded with the runaway as its reason
    polling = [r for r in out if r["kind"] == "health" and r["name"] == "apiPolling"]
    assert polling[-1]["tags"]["state"] == "degraded"
    assert "running away" in polling[-1]["tags"]["reason"]


def test_runaway_clears_when_the_client_calms_down() -> None:
    records = (
        polls("c", 0.0, 30.0, 2.0) + polls("c", 30.0, 50.0, 0.25) + polls("c", 50.0, 120.0, 2.0)
    )
    out = HealthEngine(HealthConfig(window_s=1)).replay(records)
    assert len(alerts(out, "runaway")) == 1
    (cleared,) = alerts(out, "runaway", state="cleared")
    assert cleared["client"] == "c"
    assert "again" in cleared["tags"]["reason"]


def test_a_silent_runaway_clears_too() -> None:
    records = [*polls("c", 0.0, 20.0, 0.25), http(100.0, route="/api/cards")]
    out = HealthEngine(HealthConfig(window_s=1)).replay(records)
    assert len(alerts(out, "runaway")) == 1
    (cleared,) = alerts(out, "runaway", state="cleared")
    assert "stopped polling" in cleared["tags"]["reason"]


def test_overlapping_polls_are_a_runaway_even_at_a_normal_median() -> None:
    tracker = PollTracker(HealthConfig())
    events = [tracker.poll("c", "/api/poll", t * 1.5, 3.0) for t in range(10)]
    raised = [e for e in events if e is not None]
    assert raised
    assert raised[0].state == "raised"
    assert "overlapped" in raised[0].reason


def test_a_sudden_multiplication_of_the_rate() -> None:
    tracker = PollTracker(HealthConfig())
    t = 0.0
    for _ in range(20):
        assert tracker.poll("c", "/api/poll", t, 0.01) is None
        t += 5.0
    events = []
    for _ in range(10):
        events.append(tracker.poll("c", "/api/poll", t, 0.01))
        t += 1.4  # faster than expected, though above the 1 s median threshold
    raised = [e for e in events if e is not None]
    assert raised
    assert "rate ×" in raised[0].reason


def test_clients_keyed_by_a_tag_and_bounded() -> None:
    config = HealthConfig(client_key="tag:tab", max_clients=10)
    records = []
    for i in range(50):
        records += [
            http(t * 0.25, route="/api/poll", tags={"tab": f"t{i}"}) for t in range(i, i + 8)
        ]
    engine = HealthEngine(config)
    out = engine.replay(records)
    assert {r["client"] for r in alerts(out, "runaway")} >= {"t49"}
    assert len(engine._tracker) <= 10
