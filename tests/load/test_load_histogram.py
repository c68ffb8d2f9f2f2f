from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfnb.load.histogram import RELATIVE_PRECISION, Histogram, bucket_bounds, bucket_index


def _close(got_ms: float, true_us: float) -> bool:
    # within the bucket's width: 1/1024 of the value, or half a µs in the exact range
    return abs(got_ms * 1000 - true_us) <= max(0.5, true_us * RELATIVE_PRECISION)


def test_buckets_are_contiguous_and_contain_their_values() -> None:
    for value in [*range(5000), 10**6, 123_456_789, 2**33 + 17]:
        low, high = bucket_bounds(bucket_index(value))
        assert low <= value <= high
        assert high - low <= max(0, value * RELATIVE_PRECISION)
    indices = [bucket_index(v) for v in range(70_000)]
    assert indices == sorted(indices)
    assert set(range(indices[0], indices[-1] + 1)) == set(indices)


def test_percentiles_match_numpy_on_lognormal_latencies() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=8.0, sigma=1.2, size=50_000).astype(np.int64)
    h = Histogram()
    for v in values.tolist():
        h.record(v)
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
        true = float(np.percentile(values, q, method="inverted_cdf"))
        assert _close(h.percentile(q), true), (q, h.percentile(q), true)
    assert h.count == len(values)
    assert h.mean == pytest.approx(values.mean() / 1000.0)
    assert h.max_us == values.max()
    assert h.min_us == values.min()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=300),
    st.lists(st.integers(0, 10**9), min_size=0, max_size=300),
)
def test_merge_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    ha, hb, both = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.record(v)
        both.record(v)
    for v in b:
        hb.record(v)
        both.record(v)
    merged = ha.copy().merge(hb)
    assert merged.counts == both.counts
    assert (merged.count, merged.sum_us, merged.min_us, merged.max_us) == (
        both.count,
        both.sum_us,
        both.min_us,
        both.max_us,
    )
    data = np.array(a + b)
    for q in (50, 99):
        assert _close(merged.percentile(q), float(np.percentile(data, q, method="inverted_cdf")))


def test_round_trip_through_plain_data() -> None:
    h = Histogram()
    for v in (5, 50, 5_000, 5_000_000):
        h.record(v)
    back = Histogram.from_dict(h.to_dict())
    assert back.counts == h.counts
    assert back.percentiles((50, 100)) == h.percentiles((50, 100))


def test_empty_and_bad_input() -> None:
    h = Histogram()
    assert h.percentile(99) == 0.0
    assert h.mean == 0.0
    h.record(-3)  # a clock step: clamped, not lost
    assert h.count == 1
    assert h.min_us == 0
    with pytest.raises(ValueError, match="out of range"):
        h.percentile(101)
    with pytest.raises(ValueError, match="counts"):
        Histogram.from_dict({"counts": "nope"})
