"""The health lights' documented rules, and the alerts they raise."""

from __future__ import annotations

import numpy as np
import pytest

from perfnb.widgets.lights import (
    AlertLog,
    HealthRules,
    api_polling,
    client_performance,
    server_response,
)

RULES = HealthRules()


def fig(**values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "count": 0,
        "errors": 0,
        "timeouts": 0,
        "durations": np.zeros(0),
        "polls": 0,
        "poll_errors": 0,
        "poll_intervals": [],
        "last_poll_age": None,
        "vitals": {},
    }
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("durations", "timeouts", "state"),
    [
        ([10.0] * 100, 0, "good"),
        ([10.0] * 90 + [400.0] * 10, 0, "slow"),
        ([10.0] * 90 + [3000.0] * 10, 0, "timeout"),
        ([10.0] * 100, 2, "timeout"),
    ],
)
def test_server_response(durations: list[float], timeouts: int, state: str) -> None:
    light = server_response(
        fig(count=len(durations), durations=np.array(durations), timeouts=timeouts), RULES
    )
    assert light["state"] == state
    assert light["reason"]


@pytest.mark.parametrize(
    ("values", "state", "word"),
    [
        (
            {"polls": 10, "poll_intervals": [2.0] * 9, "last_poll_age": 1.0},
            "healthy",
            "every 2.0 s",
        ),
        ({"polls": 50, "poll_intervals": [0.3] * 49, "last_poll_age": 0.0}, "degraded", "runaway"),
        ({"polls": 10, "poll_errors": 1, "last_poll_age": 1.0}, "degraded", "10%"),
        ({"polls": 10, "poll_errors": 5, "last_poll_age": 1.0}, "failing", "50%"),
        ({"polls": 0, "last_poll_age": 20.0}, "failing", "no polls for 20 s"),
        ({}, "unknown", "no polling"),
    ],
)
def test_api_polling(values: dict[str, object], state: str, word: str) -> None:
    light = api_polling(fig(**values), RULES)
    assert light["state"] == state
    assert word in light["reason"]


def test_client_performance_uses_p75_of_web_vitals() -> None:
    assert client_performance(fig(vitals={"LCP": [1000.0] * 10}), RULES)["state"] == "optimal"
    degraded = client_performance(fig(vitals={"LCP": [3000.0] * 10, "CLS": [0.0]}), RULES)
    assert degraded["state"] == "degraded"
    assert "LCP 3000 ms" in degraded["reason"]
    assert client_performance(fig(vitals={"CLS": [0.5] * 4}), RULES)["state"] == "poor"


def test_alerts_are_raised_on_worsening_and_noted_on_recovery() -> None:
    log = AlertLog(clock=lambda: 5.0)
    ok = {"state": "good", "level": "ok", "reason": "fine"}
    bad = {"state": "timeout", "level": "bad", "reason": "p95 3000 ms"}
    log.observe({"serverResponse": ok})  # type: ignore[dict-item]
    log.observe({"serverResponse": bad})  # type: ignore[dict-item]
    log.observe({"serverResponse": bad})  # type: ignore[dict-item]
    log.observe({"serverResponse": ok})  # type: ignore[dict-item]
    assert [a["level"] for a in log.items] == ["info", "critical"]
