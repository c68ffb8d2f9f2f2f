"""Vectorised figures per group: group numbers, extremes and sketches of many groups at once.

A day's summary has one row per group of its records and a multi-day read merges
thousands of such rows; doing either one group at a time in Python would cost
more than the data. These helpers work on whole columns instead: rows get group
numbers once (:func:`group_rows`), and every figure is a ``bincount`` or one pass
over flat arrays. Sketches are laid out as Arrow list arrays, one row per group:
the bucket keys of :func:`perfnb.analysis.sketch.bucket_keys` and their counts.

>>> import pyarrow as pa
>>> numbers, first = group_rows(pa.table({"route": ["/a", "/b", "/a"]}), ["route"])
>>> numbers.tolist(), first.tolist()
([0, 1, 0], [0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from perfnb.analysis.sketch import DEFAULT_ALPHA, MIN_VALUE, bucket_keys
from perfnb.errors import StoreError

__all__ = [
    "error_type_counts",
    "extreme",
    "float_column",
    "group_rows",
    "sketch_lists",
    "sketch_quantiles",
    "value_codes",
]

_Ints = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.float64]


def value_codes(column: pa.ChunkedArray) -> tuple[_Ints, pa.Array]:
    """Codes (0 for null) of a column's values, and the values code 1, 2, … stand for."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    codes = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes + 1, array.dictionary


def group_rows(table: pa.Table, columns: Sequence[str]) -> tuple[_Ints, _Ints]:
    """Each row's group number and the first row of each group."""
    combined = np.zeros(table.num_rows, np.int64)
    span = 1
    for name in columns:
        codes, dictionary = value_codes(table.column(name))
        size = len(dictionary) + 1
        if span * size >= 2**62:  # renumber what we have so far before it overflows
            _, combined = np.unique(combined, return_inverse=True)
            span = int(combined.max()) + 1 if combined.size else 1
        combined = combined * size + codes
        span *= size
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    return inverse.astype(np.int64).ravel(), first.astype(np.int64)


def float_column(table: pa.Table, name: str) -> tuple[_Floats, npt.NDArray[np.bool_]]:
    """A column as float64 (null as NaN) and its mask of non-null values."""
    array = table.column(name).combine_chunks().cast(pa.float64())
    values = pc.fill_null(array, np.nan).to_numpy(zero_copy_only=False)
    valid = ~array.is_null().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float64), np.asarray(valid, np.bool_)


def extreme(groups: _Ints, values: _Floats, size: int, *, low: bool) -> _Floats:
    """Per group, the least (``low``) or greatest of ``values``; NaN for groups without any."""
    out = np.full(size, np.inf if low else -np.inf)
    (np.minimum if low else np.maximum).at(out, groups, values)
    out[~np.isfinite(out)] = np.nan
    return out


def sketch_lists(
    groups: _Ints, values: _Floats, size: int, alpha: float
) -> tuple[pa.Array, pa.Array, _Ints]:
    """Per group: the sketch's keys and counts as list arrays, and its zero bucket."""
    zeros = np.bincount(groups[values <= MIN_VALUE], minlength=size).astype(np.int64)
    positive = values > MIN_VALUE
    keys = bucket_keys(values[positive], alpha=alpha)
    owners = groups[positive]
    if keys.size:
        low = int(keys.min())
        span = int(keys.max()) - low + 1
        unique, counts = np.unique(owners * span + (keys - low), return_counts=True)
        owner, key = unique // span, unique % span + low
    else:
        owner = key = counts = np.zeros(0, np.int64)
    offsets = np.searchsorted(owner, np.arange(size + 1)).astype(np.int32)
    key_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(key, pa.int64()))
    count_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(counts, pa.int64()))
    return key_lists, count_lists, zeros


def error_type_counts(table: pa.Table, groups: _Ints, size: int) -> pa.Array:
    """Per group, records per ``error_type`` as a ``map<string, int64>`` array."""
    codes, dictionary = value_codes(table.column("error_type"))
    names = dictionary.cast(pa.string())
    present = codes > 0
    span = len(names) + 1
    unique, counts = np.unique(groups[present] * span + codes[present], return_counts=True)
    owner, code = unique // span, unique % span - 1
    offsets = np.searchsorted(owner, np.arange(size + 1)).astype(np.int32)
    return pa.MapArray.from_arrays(
        pa.array(offsets), names.take(pa.array(code, pa.int64())), pa.array(counts, pa.int64())
    )


def sketch_quantiles(
    keys: pa.Array,
    counts: pa.Array,
    zeros: _Ints,
    lows: _Floats,
    highs: _Floats,
    qs: Sequence[float],
    *,
    alpha: float = DEFAULT_ALPHA,
) -> _Floats:
    """Quantiles of many sketches at once: row ``i`` is the sketch of ``keys[i]``/``counts[i]``.

    The same answers as :meth:`LatencySketch.quantiles` (interpolating between the
    values around rank ``q * (count - 1)``, each read from its bucket and clamped
    to the exact ``lows``/``highs``), without building a sketch per row: merging
    thirty days of fifty routes reads all their quantiles in a few vectorised steps.
    NaN for empty rows.
    """
    key_values = keys.values.to_numpy(zero_copy_only=False).astype(np.int64)
    count_values = counts.values.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = keys.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    begin, end = offsets[:-1], offsets[1:]
    running = np.concatenate([[0], np.cumsum(count_values)])  # counts before each bucket
    totals = zeros + running[end] - running[begin]
    gamma = (1.0 + alpha) / (1.0 - alpha)
    out = np.full((len(zeros), len(qs)), np.nan)
    filled = totals > 0
    if not filled.any():
        return out

    def value_at(index: _Floats) -> _Floats:
        """The estimate of each row's ``index``-th smallest value (0-based)."""
        inside = np.maximum(index - zeros, 0) + running[begin]
        bucket = np.searchsorted(running[1:], inside, side="right")
        bucket = np.clip(bucket, begin, np.maximum(end - 1, begin))
        safe = np.minimum(bucket, max(key_values.size - 1, 0))
        key = key_values[safe] if key_values.size else np.zeros_like(safe)
        estimate = np.clip(
            2.0 * np.power(gamma, key.astype(np.float64)) / (gamma + 1.0), lows, highs
        )
        # The zero bucket answers with the smallest value, within MIN_VALUE of all.
        zero = np.where(lows <= MIN_VALUE, lows, 0.0)
        return np.asarray(np.where(index < zeros, zero, estimate), np.float64)

    for column, q in enumerate(qs):
        if not 0.0 <= q <= 1.0:
            raise StoreError(f"quantile: got {q!r}; expected 0 ≤ q ≤ 1")
        rank = q * (np.maximum(totals, 1) - 1).astype(np.float64)
        below = np.floor(rank)
        value = value_at(below)
        step = rank > below
        if step.any():
            value = value + np.where(step, (rank - below) * (value_at(below + 1) - value), 0.0)
        out[:, column] = np.where(filled, value, np.nan)
    return out
