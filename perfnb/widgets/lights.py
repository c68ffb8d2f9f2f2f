"""Health lights in the requirements' terms, from the dashboard's recent figures.

Three lights, each with a state and the reason for it:

=====================  ===============================  ==================================
light                  states                           rule (over the last ``window_s``)
=====================  ===============================  ==================================
``apiPolling``         healthy / degraded / failing     polling routes: failing when ≥ 20%
                                                        of polls fail or none arrived for
                                                        ``poll_silence_s`` after some did;
                                                        degraded when ≥ 5% fail or the
                                                        median interval is under half the
                                                        expected minimum (a runaway) or
                                                        over twice the expected maximum
``serverResponse``     good / slow / timeout            p95 latency ≥ ``timeout_ms`` or
                                                        ≥ 1% timeouts → timeout;
                                                        p95 ≥ ``slow_ms`` → slow
``clientPerformance``  optimal / degraded / poor        Web Vitals at p75 against the
                                                        published good / poor thresholds
                                                        (LCP, INP, CLS, FCP, TTFB): any
                                                        poor → poor; any not good →
                                                        degraded
=====================  ===============================  ==================================

A light with nothing to judge says ``unknown`` and why. These are deliberately
simple rules over one window of figures; perfnb's health engine
(:mod:`perfnb.analysis.health`: baselines, hysteresis, per-client runaways) is the
refined version, and :func:`engine_lights` shows its states as lights (the
health board does).

>>> rules = HealthRules()
>>> server_response({"count": 0, "durations": [], "timeouts": 0}, rules)["state"]
'unknown'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from perfnb.analysis.health import STATES, HealthState
from perfnb.widgets._protocols import AlertItem, HealthLight

__all__ = [
    "LIGHTS",
    "VITAL_THRESHOLDS",
    "AlertLog",
    "HealthRules",
    "api_polling",
    "client_performance",
    "engine_lights",
    "evaluate",
    "server_response",
]

LIGHTS: Final = ("apiPolling", "serverResponse", "clientPerformance")

#: Web Vitals (good up to, poor above) at the 75th percentile, as published with them.
VITAL_THRESHOLDS: Final[dict[str, tuple[float, float]]] = {
    "LCP": (2500.0, 4000.0),
    "INP": (200.0, 500.0),
    "CLS": (0.1, 0.25),
    "FCP": (1800.0, 3000.0),
    "TTFB": (800.0, 1800.0),
    "FID": (100.0, 300.0),
}


@dataclass(frozen=True, slots=True)
class HealthRules:
    """Thresholds of the health lights (see the module's table)."""

    window_s: int = 30
    slow_ms: float = 300.0
    timeout_ms: float = 2000.0
    timeout_share: float = 0.01
    poll_min_s: float = 2.0
    poll_max_s: float = 5.0
    poll_degraded_errors: float = 0.05
    poll_failing_errors: float = 0.2
    poll_silence_s: float = 15.0


def _light(state: str, level: str, reason: str) -> HealthLight:
    return {"state": state, "level": level, "reason": reason}  # type: ignore[typeddict-item]


def api_polling(fig: Mapping[str, Any], rules: HealthRules) -> HealthLight:
    """The ``apiPolling`` light from the polling figures of the window."""
    polls = int(fig.get("polls", 0))
    age = fig.get("last_poll_age")
    if not polls:
        if age is None:
            return _light("unknown", "unknown", "no polling requests seen yet")
        return _light("failing", "bad", f"no polls for {age:.0f} s")
    if age is not None and age >= rules.poll_silence_s:
        return _light("failing", "bad", f"no polls for {age:.0f} s")
    share = int(fig.get("poll_errors", 0)) / polls
    if share >= rules.poll_failing_errors:
        return _light("failing", "bad", f"{share:.0%} of {polls} polls failed")
    intervals = fig.get("poll_intervals") or []
    median = float(np.median(intervals)) if len(intervals) else None
    expected = f"expected {rules.poll_min_s:g}–{rules.poll_max_s:g} s"
    if share >= rules.poll_degraded_errors:
        return _light("degraded", "warn", f"{share:.0%} of {polls} polls failed")
    if median is not None and median < rules.poll_min_s / 2:
        return _light("degraded", "warn", f"polling every {median:.2f} s, {expected}: a runaway?")
    if median is not None and median > rules.poll_max_s * 2:
        return _light("degraded", "warn", f"polling every {median:.1f} s, {expected}")
    every = f", every {median:.1f} s" if median is not None else ""
    return _light("healthy", "ok", f"{polls} polls{every}, {share:.0%} failed")


def server_response(fig: Mapping[str, Any], rules: HealthRules) -> HealthLight:
    """The ``serverResponse`` light from the window's request latencies and timeouts."""
    count = int(fig.get("count", 0))
    if not count:
        return _light("unknown", "unknown", "no requests in the window")
    p95 = float(np.percentile(np.asarray(fig["durations"], dtype=float), 95))
    timeouts = int(fig.get("timeouts", 0))
    share = timeouts / count
    if share >= rules.timeout_share:
        return _light("timeout", "bad", f"{timeouts} of {count} requests timed out")
    if p95 >= rules.timeout_ms:
        return _light("timeout", "bad", f"p95 {p95:.0f} ms ≥ {rules.timeout_ms:g} ms")
    if p95 >= rules.slow_ms:
        return _light("slow", "warn", f"p95 {p95:.0f} ms ≥ {rules.slow_ms:g} ms")
    return _light("good", "ok", f"p95 {p95:.0f} ms over {count} requests")


def client_performance(fig: Mapping[str, Any], rules: HealthRules) -> HealthLight:
    """The ``clientPerformance`` light from the window's Web Vitals (p75)."""
    vitals: Mapping[str, list[float]] = fig.get("vitals") or {}
    judged = []
    for name, values in sorted(vitals.items()):
        if name not in VITAL_THRESHOLDS or not values:
            continue
        good, poor = VITAL_THRESHOLDS[name]
        p75 = float(np.percentile(np.asarray(values, dtype=float), 75))
        grade = 2 if p75 > poor else 1 if p75 > good else 0
        shown = f"{p75:.3g}" if name == "CLS" else f"{p75:.0f} ms"
        judged.append((grade, f"{name} {shown}"))
    if not judged:
        return _light("unknown", "unknown", "no Web Vitals from browsers in the window")
    worst = max(g for g, _ in judged)
    reason = ", ".join(text for g, text in judged if g == worst) + " at p75"
    if worst == 2:
        return _light("poor", "bad", reason)
    if worst == 1:
        return _light("degraded", "warn", reason)
    return _light("optimal", "ok", ", ".join(t for _, t in judged) + " at p75")


def evaluate(fig: Mapping[str, Any], rules: HealthRules) -> dict[str, HealthLight]:
    """All three lights."""
    return {
        "apiPolling": api_polling(fig, rules),
        "serverResponse": server_response(fig, rules),
        "clientPerformance": client_performance(fig, rules),
    }


_LEVELS: Final = ("ok", "warn", "bad")


def engine_lights(states: Mapping[str, HealthState]) -> dict[str, HealthLight]:
    """The health engine's states (:attr:`HealthEngine.states`) as the three lights.

    >>> from perfnb.analysis.health import HealthEngine
    >>> engine_lights(HealthEngine().states)["apiPolling"]["level"]
    'unknown'
    """
    out: dict[str, HealthLight] = {}
    for name in LIGHTS:
        state = states.get(name)
        if state is None or state.state not in STATES[name]:
            reason = state.reason if state is not None else "no data yet"
            out[name] = _light("unknown", "unknown", reason)
            continue
        out[name] = _light(state.state, _LEVELS[STATES[name].index(state.state)], state.reason)
    return out


_RANK: Final = {"unknown": 0, "ok": 0, "warn": 1, "bad": 2}


class AlertLog:
    """Alerts raised when a light gets worse (and a note when it recovers), newest first.

    >>> log = AlertLog(clock=lambda: 0.0)
    >>> log.observe({"serverResponse": _light("slow", "warn", "p95 400 ms ≥ 300 ms")})
    >>> log.items[0]["message"]
    'serverResponse slow: p95 400 ms ≥ 300 ms'
    """

    def __init__(self, *, limit: int = 50, clock: Any = time.time) -> None:
        self.limit = limit
        self.items: list[AlertItem] = []
        self._levels: dict[str, str] = {}
        self._clock = clock

    def add(self, level: str, source: str, message: str, *, t: float | None = None) -> None:
        item: AlertItem = {
            "t": round(self._clock() if t is None else t, 3),
            "level": level,  # type: ignore[typeddict-item]
            "source": source,
            "message": message,
        }
        self.items.insert(0, item)
        del self.items[self.limit :]

    def observe(self, lights: Mapping[str, HealthLight]) -> None:
        for name, light in lights.items():
            before = self._levels.get(name, "unknown")
            after = light["level"]
            self._levels[name] = after
            if _RANK[after] > _RANK[before]:
                level = "critical" if after == "bad" else "warning"
                self.add(level, name, f"{name} {light['state']}: {light['reason']}")
            elif _RANK[after] < _RANK[before] and after == "ok":
                self.add("info", name, f"{name} back to {light['state']}: {light['reason']}")
