"""A mergeable latency sketch: logarithmic buckets with a bounded relative error.

A :class:`LatencySketch` keeps counts in buckets whose bounds grow by a factor
``gamma = (1 + alpha) / (1 - alpha)``; every value in bucket ``k`` lies in
``(gamma**(k-1), gamma**k]`` and the bucket answers with ``2 * gamma**k / (gamma + 1)``,
which is within ``alpha`` (0.75% by default) of each of them. Quantiles read from the
counts therefore carry that relative error at most, however many values went in,
and two sketches merge by adding counts — so the p95 over thirty days comes from
merging thirty daily sketches, never from averaging thirty daily p95s.

Values at or below :data:`MIN_VALUE` (a nanosecond, in milliseconds) are counted in
a zero bucket; negative and non-finite values are refused and counted in
:attr:`LatencySketch.rejected`. Count, sum, min and max are kept exactly.

>>> sketch = LatencySketch()
>>> sketch.add([1.0, 2.0, 3.0, 4.0, 100.0])
>>> sketch.count, sketch.max
(5, 100.0)
>>> round(sketch.quantile(0.5), 1)
3.0
>>> other = LatencySketch.of([5.0] * 5)
>>> merged = sketch.merged(other)
>>> merged.count, round(merged.quantile(0.5), 1)
(10, 5.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from perfnb.errors import PerfnbError

__all__ = ["DEFAULT_ALPHA", "MIN_VALUE", "LatencySketch", "SketchError", "bucket_keys"]

#: Relative accuracy of quantiles read from a sketch: 0.75%, which keeps them within 1% of
#: interpolated exact quantiles (``quantile_cont``) even where neighbouring values
#: straddle a bucket bound.
DEFAULT_ALPHA: Final = 0.0075
#: Values at or below this (ms) count in the zero bucket.
MIN_VALUE: Final = 1e-6

_Ints = npt.NDArray[np.int64]


class SketchError(PerfnbError):
    """Sketches that cannot be combined or rebuilt (different accuracy, bad arrays)."""


def _log_gamma(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise SketchError(f"alpha: got {alpha!r}; expected a relative accuracy in (0, 1)")
    return math.log((1.0 + alpha) / (1.0 - alpha))


def bucket_keys(values: npt.ArrayLike, *, alpha: float = DEFAULT_ALPHA) -> _Ints:
    """The bucket key of each value (vectorised).

    Values at or below :data:`MIN_VALUE` get the key of ``MIN_VALUE``; sketches
    count them in their zero bucket instead, which callers take apart with a mask
    (see :meth:`LatencySketch.from_keys`). Values must be finite and non-negative.

    >>> bucket_keys([1.0, 1.02, 2.0]).tolist()
    [0, 2, 47]
    """
    array = np.asarray(values, dtype=np.float64)
    scale = 1.0 / _log_gamma(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        keys = np.ceil(np.log(np.maximum(array, MIN_VALUE)) * scale)
    return keys.astype(np.int64)


class LatencySketch:
    """Counts of values in logarithmic buckets; quantiles within ``alpha`` relative error.

    Buckets are held densely from the lowest to the highest key seen (a day of
    latencies between 1 µs and 10 minutes spans under 1,100 buckets).
    """

    __slots__ = ("_counts", "_low", "alpha", "count", "max", "min", "rejected", "sum", "zeros")

    def __init__(self, *, alpha: float = DEFAULT_ALPHA) -> None:
        _log_gamma(alpha)
        self.alpha = float(alpha)
        self._low = 0  # key of _counts[0]
        self._counts: _Ints = np.zeros(0, dtype=np.int64)
        self.zeros = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.rejected = 0

    def __repr__(self) -> str:
        if not self.count:
            return f"LatencySketch(alpha={self.alpha}, empty)"
        return (
            f"LatencySketch(alpha={self.alpha}, count={self.count}, min={self.min:g}, "
            f"p50={self.quantile(0.5):g}, max={self.max:g})"
        )

    # -- building --------------------------------------------------------------------

    @classmethod
    def of(cls, values: npt.ArrayLike, *, alpha: float = DEFAULT_ALPHA) -> LatencySketch:
        """A sketch of ``values``."""
        sketch = cls(alpha=alpha)
        sketch.add(values)
        return sketch

    def add(self, values: npt.ArrayLike) -> None:
        """Count ``values`` (ms; any array-like). NaN, infinite and negative ones are rejected."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            return
        good = np.isfinite(array) & (array >= 0.0)
        if not good.all():
            self.rejected += int(array.size - np.count_nonzero(good))
            array = array[good]
            if array.size == 0:
                return
        small = array <= MIN_VALUE
        zeros = int(np.count_nonzero(small))
        positive = array[~small] if zeros else array
        if positive.size:
            keys, counts = np.unique(bucket_keys(positive, alpha=self.alpha), return_counts=True)
            self._add_counts(keys, counts.astype(np.int64))
        self.zeros += zeros
        self.count += int(array.size)
        self.sum += float(array.sum())
        self.min = min(self.min, float(array.min()))
        self.max = max(self.max, float(array.max()))

    def _add_counts(self, keys: _Ints, counts: _Ints) -> None:
        """Add ``counts`` to the buckets ``keys`` (sorted, unique)."""
        if keys.size == 0:
            return
        low, high = int(keys[0]), int(keys[-1])
        if self._counts.size == 0:
            self._low = low
            self._counts = np.zeros(high - low + 1, dtype=np.int64)
        else:
            new_low = min(low, self._low)
            new_high = max(high, self._low + self._counts.size - 1)
            if new_low != self._low or new_high - new_low + 1 != self._counts.size:
                grown = np.zeros(new_high - new_low + 1, dtype=np.int64)
                start = self._low - new_low
                grown[start : start + self._counts.size] = self._counts
                self._low, self._counts = new_low, grown
        np.add.at(self._counts, keys - self._low, counts)

    # -- combining --------------------------------------------------------------------

    def merge(self, other: LatencySketch) -> None:
        """Add ``other``'s counts into this sketch (same ``alpha`` only)."""
        if other.alpha != self.alpha:
            raise SketchError(f"merge: alpha {other.alpha} differs from this sketch's {self.alpha}")
        if other._counts.size:
            keys = np.arange(other._low, other._low + other._counts.size, dtype=np.int64)
            self._add_counts(keys, other._counts)
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.rejected += other.rejected

    def merged(self, *others: LatencySketch) -> LatencySketch:
        """A new sketch holding this one and ``others``."""
        out = self.copy()
        for other in others:
            out.merge(other)
        return out

    @classmethod
    def merge_all(
        cls, sketches: Iterable[LatencySketch], *, alpha: float = DEFAULT_ALPHA
    ) -> LatencySketch:
        """One sketch of all ``sketches`` (an empty one when there are none)."""
        out = cls(alpha=alpha)
        for sketch in sketches:
            out.merge(sketch)
        return out

    def copy(self) -> LatencySketch:
        out = LatencySketch(alpha=self.alpha)
        out._low, out._counts = self._low, self._counts.copy()
        out.zeros, out.count, out.sum = self.zeros, self.count, self.sum
        out.min, out.max, out.rejected = self.min, self.max, self.rejected
        return out

    # -- reading ----------------------------------------------------------------------

    @property
    def mean(self) -> float:
        """Exact mean of the values counted (NaN when empty)."""
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 ≤ q ≤ 1), within ``alpha`` relative error; NaN when empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles in one pass over the buckets.

        Like DuckDB's ``quantile_cont`` and NumPy's default, the answer interpolates
        between the two values around rank ``q * (count - 1)``, each read from its
        bucket and clamped to the exact min and max.
        """
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise SketchError(f"quantile: got {q!r}; expected 0 ≤ q ≤ 1")
        if not self.count:
            return [math.nan for _ in qs]
        cumulative = np.cumsum(self._counts)
        gamma = (1.0 + self.alpha) / (1.0 - self.alpha)

        def value_at(index: int) -> float:
            """The estimate of the ``index``-th smallest value (0-based)."""
            if index < self.zeros:
                # the zero bucket answers with the smallest value, within MIN_VALUE of all
                return self.min if self.min <= MIN_VALUE else 0.0
            bucket = int(np.searchsorted(cumulative, index - self.zeros, side="right"))
            bucket = min(bucket, cumulative.size - 1)
            estimate = 2.0 * gamma ** (self._low + bucket) / (gamma + 1.0)
            return min(max(estimate, self.min), self.max)

        out: list[float] = []
        for q in qs:
            rank = q * (self.count - 1)
            below = math.floor(rank)
            value = value_at(below)
            if rank > below:
                value += (rank - below) * (value_at(below + 1) - value)
            out.append(value)
        return out

    # -- storage ----------------------------------------------------------------------

    def to_arrays(self) -> tuple[_Ints, _Ints]:
        """The non-empty buckets as ``(keys, counts)`` (sorted keys; the zero bucket apart)."""
        nonzero = np.flatnonzero(self._counts)
        return (nonzero + self._low).astype(np.int64), self._counts[nonzero].copy()

    @classmethod
    def from_arrays(
        cls,
        keys: npt.ArrayLike,
        counts: npt.ArrayLike,
        *,
        zeros: int = 0,
        total: float | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        alpha: float = DEFAULT_ALPHA,
    ) -> LatencySketch:
        """Rebuild a sketch from :meth:`to_arrays` output and its exact figures.

        Without ``total``/``minimum``/``maximum`` they are estimated from the buckets.
        """
        key_array = np.asarray(keys, dtype=np.int64).ravel()
        count_array = np.asarray(counts, dtype=np.int64).ravel()
        if key_array.shape != count_array.shape:
            raise SketchError(f"from_arrays: {key_array.size} keys but {count_array.size} counts")
        if count_array.size and int(count_array.min()) < 0:
            raise SketchError("from_arrays: counts must not be negative")
        if zeros < 0:
            raise SketchError(f"from_arrays: zeros is {zeros}; expected ≥ 0")
        sketch = cls(alpha=alpha)
        order = np.argsort(key_array, kind="stable")
        key_array, count_array = key_array[order], count_array[order]
        if key_array.size and np.any(np.diff(key_array) == 0):
            key_array, inverse = np.unique(key_array, return_inverse=True)
            count_array = np.bincount(inverse, weights=count_array).astype(np.int64)
        sketch._add_counts(key_array, count_array)
        sketch.zeros = int(zeros)
        sketch.count = int(count_array.sum()) + sketch.zeros
        if sketch.count:
            gamma = (1.0 + alpha) / (1.0 - alpha)
            values = 2.0 * np.power(gamma, key_array.astype(np.float64)) / (gamma + 1.0)
            low_estimate = 0.0 if zeros or not values.size else float(values[0])
            high_estimate = float(values[-1]) if values.size else 0.0
            sketch.min = low_estimate if minimum is None else float(minimum)
            sketch.max = high_estimate if maximum is None else float(maximum)
            sketch.sum = float((values * count_array).sum()) if total is None else float(total)
        return sketch

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (see :meth:`from_dict`)."""
        keys, counts = self.to_arrays()
        return {
            "alpha": self.alpha,
            "keys": keys.tolist(),
            "counts": counts.tolist(),
            "zeros": self.zeros,
            "sum": self.sum,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySketch:
        """The sketch :meth:`to_dict` described."""
        try:
            return cls.from_arrays(
                data["keys"],
                data["counts"],
                zeros=int(data.get("zeros", 0)),
                total=data.get("sum"),
                minimum=data.get("min"),
                maximum=data.get("max"),
                alpha=float(data.get("alpha", DEFAULT_ALPHA)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SketchError(f"from_dict: not a sketch ({exc!r})") from None

    @classmethod
    def from_keys(
        cls,
        keys: npt.ArrayLike,
        values: npt.ArrayLike,
        *,
        alpha: float = DEFAULT_ALPHA,
    ) -> LatencySketch:
        """A sketch from precomputed :func:`bucket_keys` and the values they came from.

        Lets a caller compute keys for millions of rows once, vectorised, and build
        one sketch per group from slices of them.
        """
        value_array = np.asarray(values, dtype=np.float64).ravel()
        key_array = np.asarray(keys, dtype=np.int64).ravel()
        small = value_array <= MIN_VALUE
        sketch = cls(alpha=alpha)
        if value_array.size == 0:
            return sketch
        unique, counts = np.unique(key_array[~small], return_counts=True)
        sketch._add_counts(unique, counts.astype(np.int64))
        sketch.zeros = int(np.count_nonzero(small))
        sketch.count = int(value_array.size)
        sketch.sum = float(value_array.sum())
        sketch.min = float(value_array.min())
        sketch.max = float(value_array.max())
        return sketch
