"""Hysteresis: states move only after N agreeing windows, and never flap at a threshold."""

from __future__ import annotations

from health_support import alerts, http, steady

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.hysteresis import Hysteresis


def test_needs_consecutive_windows_to_enter_and_to_leave() -> None:
    h = Hysteresis(enter=3, leave=2)
    assert [h.update(1, 1) for _ in range(3)] == [False, False, True]
    assert h.level == 1
    assert not h.update(0, 0)
    assert h.update(0, 0)
    assert h.level == 0


def test_an_interrupted_streak_starts_again() -> None:
    h = Hysteresis(enter=2, leave=2)
    for up in [1, 0, 1, 0, 1, 0, 1, 0]:
        assert not h.update(up, up)
    assert h.level == 0


def test_between_the_thresholds_the_level_holds() -> None:
    h = Hysteresis(enter=1, leave=1)
    assert h.update(2, 2)
    # Below the enter threshold but above the leave threshold: still level 2.
    assert not any(h.update(1, 2) for _ in range(10))
    assert h.level == 2
    assert h.update(0, 1)
    assert h.level == 1


def test_rising_goes_to_the_mildest_level_of_the_streak() -> None:
    h = Hysteresis(enter=2, leave=2)
    h.update(2, 2)
    assert h.update(1, 1)
    assert h.level == 1


def test_latency_hovering_at_the_threshold_does_not_flap() -> None:
    """A route whose p95 alternates just above and below 2× baseline: at most one alert."""
    config = HealthConfig(window_s=1, enter_windows=2, leave_windows=2, baseline_min_windows=5)
    engine = HealthEngine(config)
    records = steady(20, every=0.05, duration=10.0)  # baseline ~10 ms
    t = 20.0
    for window in range(120):
        # windows alternate between 1.02× and 0.98× the enter threshold (60 ms)
        duration = 61.5 if window % 2 == 0 else 58.5
        records += [http(t + i * 0.05, duration=duration) for i in range(20)]
        t += 1.0
    out = engine.replay(records)
    raised = alerts(out, "degradation")
    cleared = alerts(out, "degradation", state="cleared")
    assert len(raised) <= 1
    assert cleared == []
