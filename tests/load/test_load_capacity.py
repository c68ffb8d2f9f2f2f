from __future__ import annotations

import _thread
import doctest
import json
import signal
import threading
import time
from typing import Any

import pytest
from load_target import TargetApp

import perfnb.load.capacity
from perfnb.errors import ConfigError
from perfnb.load import Endpoint, Endpoints
from perfnb.load.capacity import CapacityResult, StepRun, find_capacity
from perfnb.load.verdict import decide_step
from perfnb.schema import Record


def _noisy_then_steady() -> CapacityResult:
    noisy = StepRun(
        50,
        achieved_rate=3.0,
        p95_ms=800.0,
        error_rate=0.0,
        passed=False,
        why="achieved only 3/s of 50/s",
        reliable=False,
        unreliable_reasons=("worker 0 saturated its CPU (97% of a core)",),
    )
    held = StepRun(50, achieved_rate=50.0, p95_ms=4.0, error_rate=0.0, passed=True)
    slow = StepRun(
        100,
        achieved_rate=99.0,
        p95_ms=180.0,
        error_rate=0.0,
        passed=False,
        failed_route="GET /slow",
        why="p95 180.0 ms > 100 ms",
    )
    steps = [
        decide_step(50, [noisy, held], repeated_because=["run 1 was unreliable (worker 0 …)"]),
        decide_step(100, [slow, slow], repeated_because=["it failed after 50/s held"]),
    ]
    return CapacityResult(50.0, "GET /slow", slow.why, {}, steps)


def test_doctests() -> None:
    assert doctest.testmod(perfnb.load.capacity).failed == 0


def test_the_answer_says_how_sure_it_is() -> None:
    cap = _noisy_then_steady()
    assert cap.bracket == (50.0, 100)
    assert (cap.runs, cap.repeats, cap.unreliable_runs) == (4, 2, 1)
    assert cap.p95_spread_ms == 796.0
    assert (cap.confidence, cap.confidence_why) == (
        "high",
        "2 runs agree that 100/s fails; 50/s held",
    )
    assert cap.describe().splitlines() == [
        "capacity: 50 req/s; fails at 100 req/s: GET /slow — p95 180.0 ms > 100 ms",
        "confidence high: 2 runs agree that 100/s fails; 50/s held [2 step(s), 4 run(s), "
        "2 repeat(s), 1 unreliable; widest p95 spread 796.0 ms]",
    ]


def test_the_table_shows_each_step_its_runs_and_why_it_was_repeated() -> None:
    lines = _noisy_then_steady().table().splitlines()
    assert lines[0].split() == [
        "rate/s",
        "runs",
        "unrel",
        "achieved",
        "p95",
        "ms",
        "±p95",
        "errors",
        "verdict",
    ]
    assert lines[2].split() == ["50", "2", "1", "50.0", "4.00", "796.00", "0.0%", "pass"]
    assert lines[3].strip() == "repeated: run 1 was unreliable (worker 0 …)"
    assert lines[4].split()[:7] == ["100", "2", "0", "99.0", "180.00", "0.00", "0.0%"]
    assert lines[4].endswith("FAIL p95 180.0 ms > 100 ms")
    assert lines[-2].startswith("capacity: 50 req/s; fails at 100 req/s")


def test_the_json_carries_the_confidence_and_every_run() -> None:
    doc = json.loads(json.dumps(_noisy_then_steady().to_json()))
    assert doc["bracket"] == [50.0, 100]
    assert (doc["confidence"], doc["runs"], doc["repeats"], doc["unreliable_runs"]) == (
        "high",
        4,
        2,
        1,
    )
    first = doc["steps"][0]
    assert [r["reliable"] for r in first["runs"]] == [False, True]
    assert first["runs"][0]["unreliable_reasons"] == ["worker 0 saturated its CPU (97% of a core)"]


def test_a_climb_without_steps_has_low_confidence() -> None:
    cap = CapacityResult(0.0, "", "", {}, [])
    assert (cap.bracket, cap.confidence, cap.confidence_why) == ((0.0, None), "low", "no step ran")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"repeats": -1}, r"repeats=-1: accepted: an integer ≥ 0"),
        ({"repeats": True}, r"repeats=True: accepted: an integer ≥ 0"),
        ({"repeats": 1.5}, r"repeats=1.5: accepted: an integer ≥ 0"),
        ({"max_rate": 10}, r"max_rate=10: accepted: a rate ≥ start \(50.0\)"),
        ({"run_id": "mine"}, r"run_id: find_capacity names each run itself"),
        ({"step_duration": 0}, r"step_duration=0: accepted: a positive number"),
    ],
)
def test_bad_options_are_refused_before_any_load(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        find_capacity("http://127.0.0.1:9", Endpoints([Endpoint("GET", "/")]), **options)


@pytest.mark.slow
def test_capacity_reports_the_first_failing_route_and_where_its_time_went(
    target: TargetApp,
) -> None:
    scenario = Endpoints(
        [
            Endpoint("GET", "/fast", route="/fast"),
            Endpoint("GET", "/slow?delay_ms=30", route="/slow"),
        ]
    )
    cap = find_capacity(
        target.url, scenario, slo_p95_ms=15.0, start=50, step=50, step_duration=1.0, workers=1
    )
    assert cap.highest_sustained_rate == 0.0
    assert cap.first_failed_route == "GET /slow"
    assert "p95" in cap.why
    # the failure ends the climb, so it was run again to confirm it
    (only,) = cap.steps
    assert only.runs_behind >= 2
    assert cap.bracket == (0.0, 50)
    # the target's Server-Timing says app 1.5 ms and db 0.5 ms; the rest is outside the app
    assert cap.breakdown["app_ms"] == pytest.approx(1.5)
    assert cap.breakdown["db_ms"] == pytest.approx(0.5)
    assert cap.breakdown["network_ms"] > 0


@pytest.mark.slow
def test_capacity_climbs_while_the_slo_holds(target: TargetApp) -> None:
    scenario = Endpoints([Endpoint("GET", "/fast")])
    cap = find_capacity(
        target.url,
        scenario,
        slo_p95_ms=1_000.0,
        start=100,
        step=100,
        max_rate=200,
        step_duration=1.0,
        workers=1,
    )
    assert [s.rate for s in cap.steps] == [100, 200]
    assert all(s.passed for s in cap.steps)
    assert cap.highest_sustained_rate == 200
    assert cap.first_failed_route == ""
    assert cap.bracket == (200, None)


@pytest.mark.slow
def test_a_noisy_failing_first_step_is_run_again_and_does_not_end_the_climb_at_zero(
    target: TargetApp,
) -> None:
    # issue 13.7: the target fails every request of the first run only; the climb used
    # to stop there and report 0 req/s
    target.fail = True
    started: list[str] = []

    def sink(record: Record) -> None:
        if record.get("name") == "run_start":
            started.append(str(record["run_id"]))
            if len(started) == 2:
                target.fail = False

    cap = find_capacity(
        target.url,
        Endpoints([Endpoint("GET", "/fast")]),
        slo_p95_ms=1_000.0,
        start=40,
        max_rate=40,
        step_duration=1.0,
        workers=1,
        sink=sink,
    )
    (step,) = cap.steps
    first = step.runs[0]
    assert (first.passed, first.error_rate) == (False, 1.0)
    assert first.why.startswith("error rate 100.0%")
    assert step.passed
    assert cap.highest_sustained_rate == 40
    assert 2 <= len(step.runs) <= 3
    assert cap.repeats == len(step.runs) - 1
    assert "repeat" in cap.describe()
    assert {run_id for _, _, run_id in target.log} == set(started)
    assert len(started) == len(step.runs)


@pytest.mark.slow
def test_ctrl_c_during_a_step_stops_its_load_before_the_interrupt_goes_on(
    target: TargetApp,
) -> None:
    # interrupt_main does nothing while SIGINT is ignored, as it is in a test run
    # started in the background: handle it as under a terminal for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            find_capacity(
                target.url,
                Endpoints([Endpoint("GET", "/fast")]),
                start=40,
                step_duration=60.0,
                workers=1,
            )
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    raised = time.time()
    assert target.log
    time.sleep(0.5)
    assert max(t for t, _, _ in target.log) <= raised + 0.1
