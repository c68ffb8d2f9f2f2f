"""The latency sketch: accuracy against exact quantiles, merging, storage round trips."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfnb.analysis.sketch import DEFAULT_ALPHA, LatencySketch, SketchError, bucket_keys

QS = (0.5, 0.9, 0.95, 0.99)


def exact_quantiles(values: np.ndarray, qs: tuple[float, ...] = QS) -> list[float]:
    """DuckDB's interpolated quantiles, the reference the store's summaries answer to."""
    con = duckdb.connect()
    con.register("v", {"x": values})
    row = con.execute(
        "SELECT " + ", ".join(f"quantile_cont(x, {q})" for q in qs) + " FROM v"
    ).fetchone()
    assert row is not None
    return [float(x) for x in row]


@pytest.mark.parametrize(
    "name",
    ["lognormal", "exponential", "bimodal", "rounded-to-µs", "with-zeros"],
)
def test_merged_daily_sketches_are_within_one_percent_of_exact_quantiles(name: str) -> None:
    rng = np.random.default_rng(7)
    n = 300_000
    values = {
        "lognormal": rng.lognormal(2.0, 1.0, n),
        "exponential": rng.exponential(30.0, n),
        "bimodal": np.concatenate([rng.normal(5.0, 0.5, n // 2), rng.normal(400, 40, n // 2)]),
        "rounded-to-µs": np.round(rng.lognormal(0.0, 2.0, n), 3),
        "with-zeros": np.where(rng.random(n) < 0.2, 0.0, rng.lognormal(1.0, 1.0, n)),
    }[name]
    values = np.abs(values)
    days = np.array_split(values, 30)
    merged = LatencySketch.merge_all(LatencySketch.of(day) for day in days)

    assert merged.count == n
    assert merged.sum == pytest.approx(values.sum())
    assert merged.max == values.max()
    for estimate, exact in zip(merged.quantiles(QS), exact_quantiles(values), strict=True):
        assert estimate == pytest.approx(exact, rel=0.01, abs=1e-6)


def test_one_sketch_equals_merging_its_parts_exactly() -> None:
    values = np.random.default_rng(3).lognormal(1.0, 1.5, 50_000)
    whole = LatencySketch.of(values)
    parts = LatencySketch.merge_all(LatencySketch.of(p) for p in np.array_split(values, 7))
    keys_a, counts_a = whole.to_arrays()
    keys_b, counts_b = parts.to_arrays()
    assert keys_a.tolist() == keys_b.tolist()
    assert counts_a.tolist() == counts_b.tolist()
    assert whole.quantiles(QS) == parts.quantiles(QS)


def test_bad_values_are_counted_and_dropped() -> None:
    sketch = LatencySketch.of([1.0, math.nan, -2.0, math.inf, 3.0])
    assert sketch.count == 2
    assert sketch.rejected == 3
    assert sketch.min == 1.0
    assert sketch.max == 3.0


def test_empty_sketch_reads_as_nan() -> None:
    sketch = LatencySketch()
    assert math.isnan(sketch.quantile(0.5))
    assert math.isnan(sketch.mean)
    assert LatencySketch.merge_all([]).count == 0


def test_sketches_of_different_accuracy_do_not_merge() -> None:
    with pytest.raises(SketchError, match="alpha"):
        LatencySketch(alpha=0.01).merge(LatencySketch(alpha=0.02))
    with pytest.raises(SketchError, match="alpha"):
        LatencySketch(alpha=1.5)
    with pytest.raises(SketchError, match="quantile"):
        LatencySketch.of([1.0]).quantile(1.5)


def test_from_keys_builds_the_same_sketch_as_of() -> None:
    values = np.random.default_rng(5).exponential(10.0, 10_000)
    values[:100] = 0.0
    built = LatencySketch.from_keys(bucket_keys(values), values)
    direct = LatencySketch.of(values)
    assert built.to_arrays()[1].tolist() == direct.to_arrays()[1].tolist()
    assert built.zeros == direct.zeros == 100
    assert built.quantiles(QS) == direct.quantiles(QS)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=200,
    )
)
def test_storage_round_trips_and_quantiles_stay_in_range(values: list[float]) -> None:
    sketch = LatencySketch.of(values)
    keys, counts = sketch.to_arrays()
    back = LatencySketch.from_arrays(
        keys,
        counts,
        zeros=sketch.zeros,
        total=sketch.sum,
        minimum=sketch.min,
        maximum=sketch.max,
    )
    assert back.count == len(values)
    assert back.quantiles(QS) == sketch.quantiles(QS)
    assert LatencySketch.from_dict(sketch.to_dict()).quantiles(QS) == sketch.quantiles(QS)
    for estimate in sketch.quantiles((0.0, *QS, 1.0)):
        assert min(values) <= estimate <= max(values)
    # every value's bucket answers within alpha of it
    for value in values:
        if value > 1e-6:
            answer = LatencySketch.of([value]).quantile(0.5)
            assert answer == pytest.approx(value, rel=DEFAULT_ALPHA)


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(SketchError, match="keys"):
        LatencySketch.from_arrays([1, 2], [3])
    with pytest.raises(SketchError, match="negative"):
        LatencySketch.from_arrays([1], [-1])
    with pytest.raises(SketchError, match="not a sketch"):
        LatencySketch.from_dict({"counts": [1]})
