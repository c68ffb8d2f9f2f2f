"""Multi-day figures from daily summary rows: their sketches merged bucket by bucket.

Percentiles over many days come from adding the days' sketches, never from
averaging daily percentiles, which is neither bounded nor honest. Rows are never
filtered (that would copy the bucket lists): a selection mask picks them, and each
selected row gets a group number.

>>> from perfnb.store.summaries import summary_schema
>>> merge(summary_schema().empty_table(), by=("route",)).shape[0]
0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from perfnb.errors import StoreError
from perfnb.store.grouping import extreme, group_rows, sketch_quantiles
from perfnb.store.summaries import KEY_COLUMNS, PERCENTILES

__all__ = ["BY_COLUMNS", "MEMORY_NAMES", "merge", "select"]

#: Process sample names whose max and mean :func:`merge` reports.
MEMORY_NAMES: Final = ("rss_bytes", "js_heap_bytes")
#: What ``by`` may hold.
BY_COLUMNS: Final = (*KEY_COLUMNS, "date")


def select(
    rows: pa.Table,
    *,
    routes: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    include_load: bool = False,
) -> np.ndarray:
    """A mask of the summary rows matching the filters; load runs' rows only when asked."""
    mask = np.ones(rows.num_rows, np.bool_)
    filters = {
        "route": routes,
        "source": sources,
        "kind": kinds,
        "service": services,
        "run_id": run_ids,
    }
    for column, values in filters.items():
        if values is not None:
            mask &= _isin(rows, column, values)
    if not include_load and run_ids is None:
        mask &= rows.column("run_id").is_null().to_numpy(zero_copy_only=False)
    return mask


def _isin(rows: pa.Table, column: str, values: Sequence[str]) -> np.ndarray:
    listed = [values] if isinstance(values, str) else list(values)
    found = pc.is_in(rows.column(column), pa.array(listed, pa.string()))
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), np.bool_)


#: Most cells of (groups × buckets) merged densely; more take a sort instead.
_DENSE_LIMIT: Final = 16_000_000


@dataclass(frozen=True)
class _Groups:
    rows: pa.Table
    chosen: np.ndarray  # indices of the selected rows
    of_chosen: np.ndarray  # their group numbers
    size: int
    keys: pd.DataFrame  # the key values of each group

    @classmethod
    def make(cls, rows: pa.Table, selected: np.ndarray, keys: Sequence[str]) -> _Groups:
        chosen = np.flatnonzero(selected)
        if not keys:
            size = 1 if chosen.size else 0
            return cls(rows, chosen, np.zeros(chosen.size, np.int64), size, pd.DataFrame())
        part = rows.select(list(keys)).take(pa.array(chosen))
        numbers, first = group_rows(part, keys)
        frame = part.take(pa.array(first)).to_pandas()
        return cls(rows, chosen, numbers, len(first), frame)

    def column(self, name: str) -> np.ndarray:
        """A numeric column of the chosen rows as float64, null as NaN."""
        values = self.rows.column(name).cast(pa.float64())
        numbers: np.ndarray = np.asarray(pc.fill_null(values, np.nan).to_numpy(), np.float64)
        picked: np.ndarray = numbers[self.chosen]
        return picked

    def total(self, name: str) -> np.ndarray:
        return np.bincount(self.of_chosen, weights=self.column(name), minlength=self.size)

    def extreme(self, values: np.ndarray, *, low: bool) -> np.ndarray:
        present = ~np.isnan(values)
        return extreme(self.of_chosen[present], values[present], self.size, low=low)

    def sketches(self, prefix: str) -> tuple[pa.Array, pa.Array, np.ndarray]:
        """Per group: the bucket-wise sum of ``<prefix>_keys/_counts/_zeros``."""
        keys_column = self.rows.column(f"{prefix}_keys").combine_chunks()
        counts_column = self.rows.column(f"{prefix}_counts").combine_chunks()
        size = self.size
        offsets = keys_column.offsets.to_numpy(zero_copy_only=False)
        keys = keys_column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        counts = counts_column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        # Rows not chosen fall into one extra group, dropped at the end: cheaper
        # than cutting their buckets out of the flat arrays.
        owners = np.full(self.rows.num_rows, size, np.int64)
        owners[self.chosen] = self.of_chosen
        lengths = np.diff(offsets)
        filled = lengths > 0
        if keys.size and filled[self.chosen].any():
            # Each row's keys are sorted: its first and last bound the range.
            low = int(keys[(offsets[:-1] - offsets[0])[filled]].min())
            high = int(keys[(offsets[1:] - offsets[0] - 1)[filled]].max())
            span = high - low + 1
            flat = np.repeat(owners * span - low, lengths) + keys
            if (size + 1) * span <= _DENSE_LIMIT:  # one dense pass: no sort
                dense = np.bincount(flat, weights=counts, minlength=(size + 1) * span)
                unique = np.flatnonzero(dense[: size * span])
                summed = dense[unique].astype(np.int64)
            else:
                chosen = flat < size * span
                unique, inverse = np.unique(flat[chosen], return_inverse=True)
                summed = np.bincount(inverse.ravel(), weights=counts[chosen]).astype(np.int64)
            owner, key = unique // span, unique % span + low
        else:
            owner = key = summed = np.zeros(0, np.int64)
        bounds = pa.array(np.searchsorted(owner, np.arange(size + 1)).astype(np.int32))
        zeros = self.total(f"{prefix}_zeros").astype(np.int64)
        return (
            pa.ListArray.from_arrays(bounds, pa.array(key, pa.int64())),
            pa.ListArray.from_arrays(bounds, pa.array(summed, pa.int64())),
            zeros,
        )


def _requests(rows: pa.Table, selected: np.ndarray, by: Sequence[str]) -> pd.DataFrame:
    groups = _Groups.make(rows, selected, by)
    out: dict[str, np.ndarray] = {}
    counts = groups.total("count").astype(np.int64)
    out["count"] = counts
    out["errors"] = groups.total("errors").astype(np.int64)
    out["error_rate"] = out["errors"] / counts
    for name in ("status_5xx", "status_4xx", "timeouts", "exceptions"):
        out[name] = groups.total(name).astype(np.int64)
    keys, bucket_counts, zeros = groups.sketches("duration")
    lows = groups.extreme(groups.column("duration_min_ms"), low=True)
    highs = groups.extreme(groups.column("duration_max_ms"), low=False)
    found = sketch_quantiles(keys, bucket_counts, zeros, lows, highs, [q for q, _ in PERCENTILES])
    for index, (_, column) in enumerate(PERCENTILES):
        out[column] = found[:, index]
    out["max_ms"] = highs
    flat = bucket_counts.values.to_numpy().astype(np.float64)
    parents = pc.list_parent_indices(bucket_counts).to_numpy(zero_copy_only=False)
    sketched = zeros + np.bincount(parents, weights=flat, minlength=groups.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_ms"] = groups.total("duration_sum_ms") / sketched
        for name in ("server_ms", "app_ms", "db_ms"):
            out[f"{name}_mean"] = groups.total(f"{name}_sum") / groups.total(f"{name}_count")
    for name in ("request_bytes", "response_bytes"):
        out[name] = groups.total(f"{name}_sum").astype(np.int64)
    return pd.concat([groups.keys, pd.DataFrame(out)], axis=1)


def _vitals(rows: pa.Table, selected: np.ndarray, by: Sequence[str]) -> pd.DataFrame | None:
    if not selected.any():
        return None
    groups = _Groups.make(rows, selected, [*by, "name"])
    keys, counts, zeros = groups.sketches("value")
    scale = groups.column("value_scale")
    scales = np.ones(groups.size)
    scales[groups.of_chosen] = scale
    lows = groups.extreme(groups.column("value_min") * scale, low=True)
    highs = groups.extreme(groups.column("value_max") * scale, low=False)
    frame = groups.keys.copy()
    frame["value"] = sketch_quantiles(keys, counts, zeros, lows, highs, [0.75])[:, 0] / scales
    frame["column"] = frame["name"].astype(str).str.lower() + "_p75"
    return _spread(frame, by)


def _memory(rows: pa.Table, selected: np.ndarray, by: Sequence[str]) -> pd.DataFrame | None:
    if not selected.any():
        return None
    groups = _Groups.make(rows, selected, [*by, "name"])
    highs = groups.extreme(groups.column("value_max"), low=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = groups.total("value_sum") / groups.total("value_count")
    names = groups.keys["name"].astype(str)
    maxima, averages = groups.keys.copy(), groups.keys.copy()
    maxima["value"], maxima["column"] = highs, names + "_max"
    averages["value"], averages["column"] = means, names + "_mean"
    return _spread(pd.concat([maxima, averages], ignore_index=True), by)


def _spread(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per ``by`` group, one column per named figure."""
    if not by:
        return pd.DataFrame([dict(zip(frame["column"], frame["value"], strict=True))])
    keyed = frame[[*by, "column", "value"]].copy()
    for name in by:  # pivot drops null keys; stand them in for the moment
        keyed[name] = keyed[name].astype(object).where(keyed[name].notna(), _NULL)
    wide = keyed.pivot_table(index=list(by), columns="column", values="value", aggfunc="first")
    wide.columns.name = None
    wide = wide.reset_index()
    for name in by:
        wide[name] = wide[name].where(wide[name] != _NULL, None)
    return wide


_NULL: Final = "\x00null"


def merge(
    rows: pa.Table,
    selected: np.ndarray | None = None,
    *,
    by: Sequence[str],
    kinds: Sequence[str] | None = ("http",),
    vitals: bool = True,
    memory: bool = True,
) -> pd.DataFrame:
    """Figures per ``by`` group from summary rows of any number of days (those ``selected``).

    Request figures (count, errors by class, error rate, p50/p90/p95/p99/max/mean of
    ``duration_ms``, server/app/db means, bytes) come from the rows of ``kinds``;
    ``vitals`` adds ``<name>_p75`` from ``vital`` rows and ``memory`` adds
    ``<name>_max``/``<name>_mean`` of :data:`MEMORY_NAMES` from ``process`` rows,
    matched to the same ``by`` groups (when ``by`` does not hold ``name``).
    """
    unknown = [name for name in by if name not in BY_COLUMNS]
    if unknown:
        raise StoreError(f"by: unknown column {unknown[0]!r}; expected some of {BY_COLUMNS}")
    by = list(by)
    chosen = np.ones(rows.num_rows, np.bool_) if selected is None else selected
    wanted = chosen if kinds is None else chosen & _isin(rows, "kind", kinds)
    frame = _requests(rows, wanted, by) if wanted.any() else _empty(by)
    extras: list[pd.DataFrame | None] = []
    if "name" not in by:
        kind = rows.column("kind").to_numpy(zero_copy_only=False)
        if vitals:
            extras.append(_vitals(rows, chosen & (kind == "vital"), by))
        if memory:
            is_memory = (kind == "process") & _isin(rows, "name", MEMORY_NAMES)
            extras.append(_memory(rows, chosen & is_memory, by))
    for extra in extras:
        if extra is None:
            continue
        if not by:
            frame = pd.concat([frame, extra], axis=1)
            continue
        frame = _join(frame, extra, by)
    order = [c for c in ("count",) if c in frame]
    if by and order:
        frame = frame.sort_values(["count", *by], ascending=[False] + [True] * len(by))
    return frame.reset_index(drop=True)


def _join(left: pd.DataFrame, right: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    keyed_left, keyed_right = left.copy(), right.copy()
    for name in by:
        for frame in (keyed_left, keyed_right):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), _NULL)
    out = keyed_left.merge(keyed_right, on=by, how="outer")
    for name in by:
        out[name] = out[name].where(out[name] != _NULL, None)
    if "count" in out:
        for name in ("count", "errors", "status_5xx", "status_4xx", "timeouts", "exceptions"):
            out[name] = out[name].fillna(0).astype(np.int64)
    return out


def _empty(by: Sequence[str]) -> pd.DataFrame:
    columns = [*by, "count", "errors", "error_rate", "status_5xx", "status_4xx", "timeouts"]
    columns += ["exceptions", *(c for _, c in PERCENTILES), "max_ms", "mean_ms"]
    columns += ["server_ms_mean", "app_ms_mean", "db_ms_mean", "request_bytes", "response_bytes"]
    return pd.DataFrame(
        {name: pd.Series(dtype=object if name in by else float) for name in columns}
    )
