"""Records turned into rows of checked values, grouped by *shape*, then into Arrow tables.

A shape is the tuple of a record's keys in the order the producer wrote them.
Producers build their records the same way every time, so a writer meets only a
handful of shapes. For each one a checker specialised to exactly those columns
is generated once: it unpacks the record's values in one step and tests them
with inline comparisons. That costs about a quarter of the generic
:func:`perfnb.schema.validate_record`, and the per-record budget of the store
writer (≥ 200k records/s on two cores) leaves no room for the generic loop. The
generated checker accepts only the plain cases (``time`` an aware ``datetime``
in UTC, exact ``str``/``int``/``float`` values in range); everything else takes
the generic path, which raises the schema's own error naming the column or
normalises the record.

A row is a tuple of the shape's values with ``time`` as microseconds since the
epoch: plain ints, floats, strings and dicts, so :mod:`marshal` can log it and
the Arrow conversion at flush time is one pass per column.

>>> from datetime import datetime, timezone
>>> rows = Rows()
>>> shape, row = rows.add({"time": datetime(2026, 1, 1, tzinfo=timezone.utc),
...                        "source": "server", "kind": "http", "status": 200})
>>> row
(1767225600000000, 'server', 'http', 200)
>>> rows.take().num_rows
1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from perfnb.errors import RecordError
from perfnb.schema import (
    COLUMN_NAMES,
    COLUMNS,
    KINDS,
    MAX_STRING,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    SOURCES,
    arrow_schema,
    epoch_us,
    validate_record,
)

__all__ = ["Row", "Rows", "Shape", "table_from_rows"]

Row = tuple[Any, ...]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_TYPES: Final = {c.name: c.type for c in COLUMNS}
_REQUIRED: Final = frozenset(c.name for c in COLUMNS if c.required)
_INT_RANGES: Final = {"int16": 2**15, "int32": 2**31, "int64": 2**63}
#: Past this many distinct key orders, new ones are put in schema order first so a
#: producer that shuffles its keys cannot grow the table of generated checkers.
_MAX_SHAPES: Final = 256


def _tags_ok(value: Any) -> bool:
    if value.__class__ is not dict or len(value) > MAX_TAGS:
        return False
    for key, item in value.items():
        if key.__class__ is not str or item.__class__ is not str:
            return False
        if len(key) > MAX_TAG_KEY or len(item) > MAX_TAG_VALUE:
            return False
    return True


def _condition(name: str, var: str) -> str:
    kind = _TYPES[name]
    if kind == "timestamp":
        return f"{var}.__class__ is _datetime and {var}.tzinfo is _UTC"
    if name == "source":
        return f"{var} in _SOURCES"
    if name == "kind":
        return f"{var} in _KINDS"
    if kind in ("category", "string"):
        return f"{var}.__class__ is str and len({var}) <= {MAX_STRING}"
    if kind in _INT_RANGES:
        bound = _INT_RANGES[kind]
        return f"{var}.__class__ is int and {-bound} <= {var} < {bound}"
    if kind in ("float32", "float64"):
        # `x == x` is False for NaN only: NaN is refused, a missing value is null.
        return f"{var}.__class__ is float and {var} == {var}"
    return f"_tags_ok({var})"


def _compile_checker(keys: tuple[str, ...]) -> Callable[[Mapping[str, object]], Row | None]:
    names = [f"v{i}" for i in range(len(keys))]
    conditions = " and ".join(_condition(k, v) for k, v in zip(keys, names, strict=True))
    outputs = [
        f"({v} - _EPOCH) // _ONE_US"
        if _TYPES[k] == "timestamp"
        else (f"dict({v})" if _TYPES[k] == "tags" else v)
        for k, v in zip(keys, names, strict=True)
    ]
    # Keys are checked against the schema before this point, so the generated
    # source contains only column names the schema defines.
    source = (
        "def check(record):\n"
        f"    ({', '.join(names)},) = record.values()\n"
        f"    if {conditions}:\n"
        f"        return ({', '.join(outputs)},)\n"
        "    return None\n"
    )
    namespace: dict[str, Any] = {
        "_datetime": datetime,
        "_UTC": UTC,
        "_EPOCH": _EPOCH,
        "_ONE_US": _ONE_US,
        "_SOURCES": SOURCES,
        "_KINDS": KINDS,
        "_tags_ok": _tags_ok,
    }
    exec(compile(source, f"<perfnb row checker {len(keys)} columns>", "exec"), namespace)
    checker: Callable[[Mapping[str, object]], Row | None] = namespace["check"]
    return checker


@dataclass(slots=True, eq=False)
class Shape:
    """One key order: its id within a :class:`Rows`, its keys, checker and buffered rows."""

    id: int
    keys: tuple[str, ...]
    check: Callable[[Mapping[str, object]], Row | None]
    rows: list[Row] = field(default_factory=list)


def _normal(name: str, value: Any) -> Any:
    """A value the generic validator accepted, in the plain form a row holds."""
    kind = _TYPES[name]
    if kind == "timestamp":
        return epoch_us(value)
    if kind in ("category", "string"):
        return str(value)
    if kind == "tags":
        return {str(k): str(v) for k, v in value.items()}
    return value


class Rows:
    """A buffer of checked rows, by shape; :meth:`take` turns them into one Arrow table.

    Not thread-safe: the store writer holds its lock around every call.
    """

    def __init__(self) -> None:
        self._shapes: dict[tuple[str, ...], Shape] = {}
        self.shapes: list[Shape] = []

    def __len__(self) -> int:
        return sum(len(s.rows) for s in self.shapes)

    def shape(self, keys: tuple[str, ...]) -> Shape | None:
        """The shape for ``keys``, created if the keys name schema columns, else ``None``."""
        found = self._shapes.get(keys)
        if found is not None:
            return found
        if len(set(keys)) != len(keys) or not set(keys) >= _REQUIRED:
            return None
        if any(k not in _TYPES for k in keys):
            return None
        found = Shape(len(self.shapes), keys, _compile_checker(keys))
        self._shapes[keys] = found
        self.shapes.append(found)
        return found

    def add(self, record: Mapping[str, object]) -> tuple[Shape, Row]:
        """Check ``record`` and buffer it; raises :class:`RecordError` naming the column."""
        shape = self._shapes.get(tuple(record))
        if shape is not None:
            row = shape.check(record)
            if row is not None:
                shape.rows.append(row)
                return shape, row
        return self.add_slow(record)

    def add_slow(self, record: Mapping[str, object]) -> tuple[Shape, Row]:
        """The generic path: full validation, then normalisation into a row."""
        clean: dict[str, Any] = dict(validate_record(record))
        if len(self._shapes) >= _MAX_SHAPES and tuple(clean) not in self._shapes:
            clean = {k: clean[k] for k in COLUMN_NAMES if k in clean}
        shape = self.shape(tuple(clean))
        if shape is None:  # validate_record accepted it, so the keys are fine
            raise RecordError(f"record keys {tuple(clean)} do not form a valid shape")
        row = tuple(_normal(k, v) for k, v in clean.items())
        shape.rows.append(row)
        return shape, row

    def take(self) -> pa.Table:
        """All buffered rows as one table of :func:`arrow_schema`, sorted by time; clears."""
        tables = [table_from_rows(s.keys, s.rows) for s in self.shapes if s.rows]
        for s in self.shapes:
            s.rows.clear()
        if not tables:
            return arrow_schema().empty_table()
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return sort_by_time(table)


def table_from_rows(keys: tuple[str, ...], rows: list[Row]) -> pa.Table:
    """Rows of one shape as a table of the full schema (absent columns null)."""
    schema = arrow_schema()
    # One list per column through itemgetter: zip(*rows) would allocate an iterator
    # per row, and that many live GC-tracked objects sets off full collections
    # that walk the monitored app's whole heap.
    columns = {k: list(map(itemgetter(i), rows)) for i, k in enumerate(keys)}
    arrays = []
    for fld in schema:
        values = columns.get(fld.name)
        if values is None:
            arrays.append(pa.nulls(len(rows), fld.type))
        elif pa.types.is_timestamp(fld.type):
            arrays.append(pa.array(values, pa.int64()).cast(fld.type))
        elif pa.types.is_dictionary(fld.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def sort_by_time(table: pa.Table) -> pa.Table:
    """``table`` in time order (stable), untouched when it already is."""
    if table.num_rows < 2:
        return table
    times = table.column("time").cast(pa.int64()).to_numpy()
    if bool(np.all(times[1:] >= times[:-1])):
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
