"""Leak detection: a leak under GC sawtooth is found; a sawtooth alone never is."""

from __future__ import annotations

import statistics

from health_support import alerts, sample
from hypothesis import given
from hypothesis import strategies as st

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.leaks import LeakDetector, theil_sen

MiB = 2**20


def sawtooth(
    t: int, *, period: int = 45, base: float = 80 * MiB, amplitude: float = 60 * MiB
) -> float:
    """Memory that climbs and is collected back down every ``period`` seconds."""
    return base + amplitude * (t % period) / period


def test_theil_sen_ignores_outliers() -> None:
    points = [(float(x), 10.0 * x) for x in range(20)]
    points[5] = (5.0, 1e9)
    points[6] = (6.0, -1e9)
    slope, rising = theil_sen(points)
    assert slope == 10.0
    assert rising > 0.8


def pairwise(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Theil–Sen by its definition: the median of the slopes of every pair."""
    slopes = [
        (y1 - y0) / (x1 - x0)
        for i, (x0, y0) in enumerate(points)
        for x1, y1 in points[i + 1 :]
        if x1 != x0
    ]
    if not slopes:
        return 0.0, 0.0
    return statistics.median(slopes), sum(s > 0 for s in slopes) / len(slopes)


finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
# Bin times: seconds, often repeated (equal x), some in eighths of a second.
times = st.integers(0, 40).map(float) | st.integers(0, 10**7).map(lambda v: v / 8)


@given(st.lists(st.tuples(times, finite), max_size=70))
def test_theil_sen_is_the_median_of_every_pairs_slope(points: list[tuple[float, float]]) -> None:
    # Equal x (repeated bins) are skipped, as the definition has no slope for them.
    assert theil_sen(points) == pairwise(points)


def test_sawtooth_with_gc_raises_nothing_over_hours() -> None:
    records = [sample(t, sawtooth(t)) for t in range(0, 4 * 3600, 5)]
    assert alerts(HealthEngine().replay(records)) == []


def test_a_leak_under_the_sawtooth_is_found_then_cleared() -> None:
    leak_per_s = 80 * 1024  # 80 KiB/s, ~280 MiB an hour
    records = [sample(t, sawtooth(t) + leak_per_s * min(t, 3600)) for t in range(0, 2 * 3600, 5)]
    out = HealthEngine().replay(records)
    (raised,) = alerts(out, "leak")
    assert "server RSS" in raised["tags"]["reason"]
    assert raised["unit"] == "bytes/s"
    assert 0.5 * leak_per_s < raised["value"] < 2 * leak_per_s
    assert (raised["time"] - records[0]["time"]).total_seconds() < 40 * 60
    (cleared,) = alerts(out, "leak", state="cleared")
    assert cleared["time"] > records[0]["time"].replace(hour=13)


def test_one_step_up_is_not_a_leak() -> None:
    records = [sample(t, 100 * MiB + (200 * MiB if t > 1800 else 0)) for t in range(0, 7200, 5)]
    assert alerts(HealthEngine().replay(records)) == []


def test_browser_heap_per_page() -> None:
    config = HealthConfig(leak_bin_s=5, leak_min_duration_s=60, leak_min_growth_bytes=5 * MiB)
    records = []
    for t in range(0, 300, 2):
        for page, growth in (("page-a", 0.0), ("page-b", 100 * 1024.0)):
            rec = sample(t, 20 * MiB + growth * t, name="js_heap_bytes", source="browser")
            rec["client"] = page
            records.append(rec)
    (raised,) = alerts(HealthEngine(config).replay(records), "leak")
    assert raised["client"] == "page-b"
    assert "browser JS heap" in raised["tags"]["reason"]


def test_detector_needs_the_minimum_duration() -> None:
    config = HealthConfig(leak_bin_s=1, leak_min_duration_s=30, leak_min_growth_bytes=MiB)
    leak = LeakDetector(config)
    events = [leak.add(float(t), 50 * MiB + 10 * MiB * t) for t in range(25)]
    assert not any(events)
