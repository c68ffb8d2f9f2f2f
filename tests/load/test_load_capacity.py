from __future__ import annotations

import pytest
from load_target import TargetApp

from perfnb.load import Endpoint, Endpoints
from perfnb.load.capacity import find_capacity

pytestmark = pytest.mark.slow


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
        target.url, scenario, slo_p95_ms=15.0, start=50, step=50, step_duration=1.5, workers=1
    )
    assert cap.highest_sustained_rate == 0.0
    assert cap.first_failed_route == "GET /slow"
    assert "p95" in cap.why
    # the target's Server-Timing says app 1.5 ms and db 0.5 ms; the rest is outside the app
    assert cap.breakdown["app_ms"] == pytest.approx(1.5)
    assert cap.breakdown["db_ms"] == pytest.approx(0.5)
    assert cap.breakdown["network_ms"] > 0


def test_capacity_climbs_while_the_slo_holds(target: TargetApp) -> None:
    scenario = Endpoints([Endpoint("GET", "/fast")])
    cap = find_capacity(
        target.url,
        scenario,
        slo_p95_ms=1_000.0,
        start=100,
        step=100,
        max_rate=200,
        step_duration=1.5,
        workers=1,
    )
    assert [s.rate for s in cap.steps] == [100, 200]
    assert all(s.passed for s in cap.steps)
    assert cap.highest_sustained_rate == 200
    assert cap.first_failed_route == ""
