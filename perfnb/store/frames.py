"""DataFrames checked column by column and turned into tables of the record schema.

The vectorised counterpart of :func:`perfnb.schema.validate_record`: an unknown
column, a wrong dtype, a naive timestamp, a value out of range or outside the
known sources and kinds is a :class:`~perfnb.errors.RecordError` naming the
column and showing a sample value. In a DataFrame a missing value (``NaN``,
``None``, ``NaT``, ``pd.NA``) is null, as pandas has it — unlike a single
record, where NaN is refused.

>>> import pandas as pd
>>> frame = pd.DataFrame({"time": pd.to_datetime(["2026-01-01"], utc=True),
...                       "source": ["server"], "kind": ["http"], "status": [200]})
>>> table_from_frame(frame).column("status").type
DataType(int16)
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from perfnb.errors import RecordError
from perfnb.schema import (
    COLUMN_NAMES,
    COLUMNS,
    KINDS,
    MAX_MS,
    MAX_STRING,
    SOURCES,
    Column,
    validate_record,
)
from perfnb.store.layout import MS_COLUMNS, sort_by_time, table_schema

__all__ = ["table_from_frame"]

_BY_NAME: Final = {c.name: c for c in COLUMNS}
_INT_BOUNDS: Final = {"int16": 2**15, "int32": 2**31, "int64": 2**63}


def _sample(series: pd.Series[Any], bad: Any) -> str:
    values = series[np.asarray(bad, dtype=bool)]
    shown = repr(values.iloc[0]) if len(values) else "?"
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _fail(column: str, sample: str, accepted: str) -> RecordError:
    return RecordError(f"column {column!r}: got {sample}; {accepted}")


def _time(series: pd.Series[Any]) -> pa.Array:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        # Straight from the datetime array: no intermediate Series.
        array = series.array
        if str(series.dtype.tz) != "UTC":
            array = array.tz_convert("UTC")
        if array.unit != "us":
            array = array.as_unit("us")
        micros = np.asarray(array.asi8)
        if bool(np.asarray(array.isna()).any()):
            raise _fail("time", "NaT", "time is required in every row")
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    if pd.api.types.is_datetime64_dtype(series.dtype):
        raise _fail("time", repr(series.iloc[0]), "naive timestamps are refused: give tz=UTC")
    bad = series.map(lambda v: not hasattr(v, "utcoffset") or v.utcoffset() is None)
    if bool(bad.any()):
        raise _fail("time", _sample(series, bad), "expected timezone-aware datetimes")
    values = pd.to_datetime(series, utc=True).astype("datetime64[us, UTC]")
    if bool(values.isna().any()):
        raise _fail("time", "NaT", "time is required in every row")
    return pa.array(values, pa.timestamp("us", tz="UTC"))


def _categorical(col: Column, series: pd.Series[Any]) -> pa.Array:
    """A pandas categorical as a dictionary array: only its categories are checked."""
    categorical = series.array
    codes = np.asarray(categorical.codes)
    present = codes >= 0
    everywhere = bool(present.all())
    if col.required and not everywhere:
        raise _fail(col.name, "None", "the column is required in every row")
    categories = categorical.categories
    used = np.zeros(len(categories), dtype=bool)
    used[codes if everywhere else codes[present]] = True
    try:
        dictionary = pa.array(categories.array, from_pandas=True)
        if isinstance(dictionary, pa.ChunkedArray):
            dictionary = dictionary.combine_chunks()
        dictionary = dictionary.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        bad = pd.Series(categories).map(lambda v: not isinstance(v, str)).to_numpy() & used
        sample = repr(categories[bad][0]) if bad.any() else "?"
        raise _fail(col.name, sample, "expected strings") from None
    lengths = pc.utf8_length(dictionary).to_numpy(zero_copy_only=False)
    too_long = (lengths > MAX_STRING) & used
    if bool(too_long.any()):
        sample = repr(categories[too_long][0])[:80]
        raise _fail(col.name, sample, f"expected at most {MAX_STRING} characters")
    allowed = {"source": SOURCES, "kind": KINDS}.get(col.name)
    if allowed is not None:
        unknown = sorted(set(categories[used]) - allowed, key=str)
        if unknown:
            raise _fail(col.name, repr(unknown[0]), f"expected one of {sorted(allowed)}")
    indices = pa.array(codes.astype(np.int32), mask=None if everywhere else ~present)
    array = pa.DictionaryArray.from_arrays(indices, dictionary)
    return array if col.type == "category" else array.cast(pa.string())


def _strings(col: Column, series: pd.Series[Any]) -> pa.Array:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _categorical(col, series)
    try:
        array = pa.array(series, pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        bad = series.map(lambda v: v is not None and not isinstance(v, str) and not pd.isna(v))
        raise _fail(col.name, _sample(series, bad), "expected strings") from None
    if len(array) and (pc.max(pc.utf8_length(array)).as_py() or 0) > MAX_STRING:
        bad = series.map(lambda v: isinstance(v, str) and len(v) > MAX_STRING)
        raise _fail(col.name, _sample(series, bad), f"expected at most {MAX_STRING} characters")
    allowed = {"source": SOURCES, "kind": KINDS}.get(col.name)
    if col.required and array.null_count:
        raise _fail(col.name, "None", "the column is required in every row")
    if allowed is not None:
        unknown = sorted(set(pc.unique(array).to_pylist()) - allowed, key=str)
        if unknown:
            raise _fail(col.name, repr(unknown[0]), f"expected one of {sorted(allowed)}")
    return array.dictionary_encode() if col.type == "category" else array


def _numbers(col: Column, series: pd.Series[Any], arrow_type: pa.DataType) -> pa.Array:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        bad = series.map(lambda v: not isinstance(v, int | float) or isinstance(v, bool))
        sample = _sample(series, bad) if bool(bad.any()) else repr(series.iloc[0])
        raise _fail(
            col.name, f"{sample} (dtype {dtype})", f"expected a numeric column ({col.type})"
        )
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if col.type in _INT_BOUNDS:
        bound = _INT_BOUNDS[col.type]
        present = ~np.isnan(values)
        bad = present & ((values < -bound) | (values >= bound) | (values != np.floor(values)))
        if bool(bad.any()):
            raise _fail(col.name, _sample(series, bad), f"expected integers in [{-bound}, {bound})")
        if pd.api.types.is_integer_dtype(dtype) and not series.hasnans:
            return pa.array(series.to_numpy(), arrow_type)
        return pa.array(values, pa.float64(), from_pandas=True).cast(arrow_type)
    if col.name in MS_COLUMNS:
        with np.errstate(invalid="ignore"):
            bad = np.abs(values) >= MAX_MS
        if bool(bad.any()):
            raise _fail(
                col.name,
                _sample(series, bad),
                f"expected milliseconds in (-{MAX_MS:.0e}, {MAX_MS:.0e})",
            )
    return pa.array(values, pa.float64(), from_pandas=True).cast(arrow_type)


def _tags(series: pd.Series[Any]) -> pa.Array:
    for value in series:
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            # The generic check names the column and the offending map.
            validate_record({"time": pd.Timestamp.now("UTC"), "source": "perfnb",
                             "kind": "alert", "tags": value})  # fmt: skip
    return pa.array(series.where(series.notna(), None), pa.map_(pa.string(), pa.string()))


def table_from_frame(frame: pd.DataFrame) -> pa.Table:
    """Check ``frame`` column by column; return it as a time-sorted table of the store's form.

    The form is :func:`perfnb.store.layout.table_schema`: the record schema with
    ``*_ms`` as float64.
    """
    unknown = [c for c in frame.columns if c not in _BY_NAME]
    if unknown:
        sample = repr(frame[unknown[0]].iloc[0]) if len(frame) else "no rows"
        raise RecordError(
            f"unknown column {unknown[0]!r} (sample {sample}); columns are: "
            f"{', '.join(COLUMN_NAMES)}"
        )
    missing = [c.name for c in COLUMNS if c.required and c.name not in frame.columns]
    if missing:
        raise RecordError(f"column {missing[0]!r} is required and missing")
    schema = table_schema()
    arrays = []
    for fld in schema:
        col = _BY_NAME[fld.name]
        if fld.name not in frame.columns:
            arrays.append(pa.nulls(len(frame), fld.type))
            continue
        series = frame[fld.name]
        if col.type == "timestamp":
            arrays.append(_time(series))
        elif col.type in ("category", "string"):
            arrays.append(_strings(col, series))
        elif col.type == "tags":
            arrays.append(_tags(series))
        else:
            arrays.append(_numbers(col, series, fld.type))
    return sort_by_time(pa.Table.from_arrays(arrays, schema=schema))
