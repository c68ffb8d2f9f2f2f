"""Records checked and packed as fixed-width rows of the append log; rows decoded as Arrow.

Every record becomes one row of :data:`ROW_BYTES` bytes in a log segment (see
:mod:`perfnb.store.wal`): a *tag* (its shape's id + 1, written last, so a row torn by
a kill reads as the end of the log), then one fixed slot per column of the schema —
``time`` as days, seconds and microseconds since the epoch, strings and tags as ids into the
segment's string and tag tables, numbers as themselves. An absent column leaves
its slot untouched; the shape says which columns a row has. Because every row has
the same width, a flush turns a segment's rows into Arrow columns in one
vectorised pass over numpy views of the log, with no Python object per value.

A *shape* is the tuple of a record's keys in the order the producer wrote them.
Producers build their records the same way every time, so a writer meets only a
handful of shapes. For each one a packer specialised to exactly those columns is
generated once: it unpacks the record's values in one step, tests them with
inline comparisons, looks its strings up in the segment's string table (a string
seen before needs no other test) and packs the row into the log with one struct
call. Anything it does not accept — a value of another type, a new or bad string,
a number out of range — takes the generic path, which raises the schema's own
error naming the column or normalises the record (``int`` milliseconds, non-UTC
offsets, pandas timestamps) and packs that.

>>> from datetime import datetime, timezone
>>> encoder, log = Encoder(), Memory()
>>> encoder.attach(log)
>>> encoder.put({"time": datetime(2026, 1, 1, tzinfo=timezone.utc), "source": "server",
...              "kind": "http", "status": 200}, log)
>>> decode(log).column("status").to_pylist()
[200]
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import numpy as np
import pyarrow as pa

from perfnb.errors import RecordError, StoreError
from perfnb.schema import (
    COLUMN_NAMES,
    COLUMNS,
    KINDS,
    MAX_MS,
    MAX_STRING,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    SOURCES,
    epoch_us,
    validate_record,
)
from perfnb.store.layout import MS_COLUMNS, sort_by_time, table_schema

__all__ = [
    "ROWS_START",
    "ROW_BYTES",
    "Encoder",
    "Log",
    "Memory",
    "decode",
    "table_from_rows",
]

#: Frame types of a segment's frame area (see :mod:`perfnb.store.wal`).
SHAPE: Final = 1  # marshalled tuple of column names; the frame's id is the shape id
STRING: Final = 2  # UTF-8 text; strings are numbered in the order they are framed
TAGS: Final = 3  # marshalled dict of str to str; numbered like strings
TABLE: Final = 4  # an Arrow IPC stream of already validated records (DataFrame batches)
FRAME_TYPES: Final = frozenset({SHAPE, STRING, TAGS, TABLE})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TYPES: Final = {c.name: c.type for c in COLUMNS}
_INT_BOUND: Final = {"int16": 2**15, "int32": 2**31, "int64": 2**63}
#: Past this many distinct key orders, new ones are put in schema order first so a
#: producer that shuffles its keys cannot grow the table of generated packers.
_MAX_SHAPES: Final = 256
_MAX_SHAPE_ID: Final = 2**16 - 2

# ``time`` is packed as the days, seconds and microseconds of its difference from the
# epoch: reading three attributes costs a quarter of turning it into microseconds
# in Python, and numpy adds them up at flush time.
_SLOT: Final = {
    "timestamp": "3i",
    "category": "I",
    "string": "I",
    "tags": "I",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "float32": "d",
    "float64": "d",
}
_NUMPY: Final = {"q": "<i8", "I": "<u4", "h": "<i2", "i": "<i4", "d": "<f8"}


def _row_dtype() -> np.dtype[Any]:
    names: list[str] = ["tag"]
    formats: list[np.dtype[Any]] = [np.dtype("<u2")]
    offsets = [0]
    offset = 2
    for column in COLUMNS:
        code = _SLOT[column.type]
        names.append(column.name)
        # ``time`` is three int32s: days, seconds and microseconds since the epoch.
        formats.append(
            np.dtype((np.dtype("<i4"), (3,))) if code == "3i" else np.dtype(_NUMPY[code])
        )
        offsets.append(offset)
        offset += struct.calcsize("<" + code)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": offset})


#: One row of the log as a numpy structured type.
ROW_DTYPE: Final = _row_dtype()
#: Bytes per row.
ROW_BYTES: Final = ROW_DTYPE.itemsize
#: Where rows start in a segment: after its 16-byte magic.
ROWS_START: Final = 16
_pack_tag: Final = struct.Struct("<H").pack_into


class Log(Protocol):
    """Where an :class:`Encoder` writes: a segment of the append log, or memory."""

    map: Any  # a writable buffer (an mmap)
    front: int  # where the next row goes
    last: int  # the last offset a row may start at

    def frame(self, kind: int, ident: int, payload: Any) -> None:
        """Add a frame; raises ``SegmentFull`` (or grows) when it does not fit."""


def _tags_ok(value: Any) -> bool:
    if value.__class__ is not dict or len(value) > MAX_TAGS:
        return False
    for key, item in value.items():
        if key.__class__ is not str or item.__class__ is not str:
            return False
        if len(key) > MAX_TAG_KEY or len(item) > MAX_TAG_VALUE:
            return False
    return True


def _condition(name: str, var: str) -> str | None:
    kind = _TYPES[name]
    if kind == "timestamp":
        return f"{var}.__class__ is _datetime and {var}.tzinfo is _UTC"
    if kind in _INT_BOUND:
        return f"{var}.__class__ is int"  # the range is struct's to check
    if name in MS_COLUMNS:
        # One chained comparison refuses NaN, infinities and what a decimal(18, 3)
        # cannot hold.
        number = f"({var}.__class__ is float or {var}.__class__ is int)"
        return f"{number} and {-MAX_MS} < {var} < {MAX_MS}"
    if kind in ("float32", "float64"):
        return f"{var}.__class__ is float and {var} == {var}"  # False for NaN only
    return None  # strings and tags are checked when looked up


def _packer(keys: tuple[str, ...], shape_id: int, encoder: Encoder) -> Callable[..., bool]:
    names = {key: f"v{i}" for i, key in enumerate(keys)}
    conditions = [c for k in keys if (c := _condition(k, names[k])) is not None]
    # The body runs inside one try: a value of a surprising type (unhashable, a
    # mapping whose values() lies, an integer out of range for struct) sends the
    # record to the generic path, which names the column at fault.
    body = [f"({', '.join(names.values())},) = record.values()"]
    if conditions:
        body += [f"if not ({' and '.join(conditions)}):", "    return False"]
    fmt, args = "<", []
    for column in COLUMNS:
        code = _SLOT[column.type]
        var = names.get(column.name)
        if var is None:
            fmt += f"{struct.calcsize(code)}x"
            continue
        fmt += code
        if column.type == "timestamp":
            body.append(f"since = {var} - _EPOCH")
            args.append("since.days, since.seconds, since.microseconds")
        elif column.type in ("category", "string"):
            table = column.name if column.name in ("source", "kind") else "text"
            body += [
                f"i{var} = _{table}_get({var})",
                f"if i{var} is None:",
                f"    i{var} = _intern(_{table}, {var}, {column.name!r})",
                f"    if i{var} is None:",
                "        return False",
            ]
            args.append(f"i{var}")
        elif column.type == "tags":
            body += [f"i{var} = _tag_id({var})", f"if i{var} is None:", "    return False"]
            args.append(f"i{var}")
        else:
            args.append(var)
    body.append(f"_body(buf, pos + 2, {', '.join(args)})")
    lines = [
        "def put(record, buf, pos):",
        "    try:",
        *(f"        {line}" for line in body),
        "    except _Refused:",
        "        return False",
        f"    _tag(buf, pos, {shape_id + 1})",  # commits the row
        "    return True",
    ]
    namespace: dict[str, Any] = {
        "_datetime": datetime,
        "_UTC": UTC,
        "_EPOCH": _EPOCH,
        "_Refused": (TypeError, ValueError, struct.error),
        "_body": struct.Struct(fmt).pack_into,
        "_tag": _pack_tag,
        "_intern": encoder.intern,
        "_tag_id": encoder.tag_id,
        **{f"_{t}": d for t, d in encoder.lookups.items()},
        **{f"_{t}_get": d.get for t, d in encoder.lookups.items()},
    }
    # Keys are checked against the schema before this point, so the generated
    # source contains only column names the schema defines.
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<perfnb row packer {len(keys)} columns>", "exec"), namespace)
    packer: Callable[..., bool] = namespace["put"]
    return packer


@dataclass(slots=True, eq=False)
class Shape:
    """One key order: its id within an :class:`Encoder`, its keys and its packer.

    ``put(record, buf, pos)`` packs ``record`` (whose keys are exactly ``keys``) as
    the row at ``pos`` of ``buf`` and returns ``True``, or returns ``False`` and
    leaves the row uncommitted when a value needs the generic path.
    """

    id: int
    keys: tuple[str, ...]
    put: Callable[..., bool]


def _normal(name: str, value: Any) -> Any:
    """A value the generic validator accepted, in the plain form the packers take."""
    kind = _TYPES[name]
    if kind == "timestamp":
        return _EPOCH + timedelta(microseconds=epoch_us(value))  # a plain UTC datetime
    if kind in ("category", "string"):
        return str(value)
    if kind in _INT_BOUND:
        return int(value)
    if kind == "tags":
        return {str(k): str(v) for k, v in value.items()}
    return float(value)


class Encoder:
    """Packs records into the rows of one :class:`Log` at a time; not thread-safe.

    The string and tag tables belong to the log attached: :meth:`attach` starts
    them afresh and declares every known shape in the new log, so each segment of
    the append log can be decoded on its own.
    """

    def __init__(self) -> None:
        self.shapes: list[Shape] = []
        self._by_keys: dict[tuple[str, ...], Shape] = {}
        #: ``find(tuple(record))``: the shape of a record, or ``None``.
        self.find = self._by_keys.get
        self._ids: dict[str, int] = {}
        #: String to id, one table per rule a string must meet (source, kind, text).
        self.lookups: dict[str, dict[str, int]] = {"source": {}, "kind": {}, "text": {}}
        self._tags: dict[tuple[tuple[str, str], ...], int] = {}
        self._log: Log | None = None

    def attach(self, log: Log) -> None:
        """Write to ``log`` from now on, with fresh string and tag tables."""
        self._log = log
        self._ids.clear()
        for table in self.lookups.values():
            table.clear()
        self._tags.clear()
        for shape in self.shapes:
            log.frame(SHAPE, shape.id, marshal.dumps(shape.keys))

    def intern(self, table: dict[str, int], value: Any, column: str) -> int | None:
        """The id of a string not yet in ``table``; ``None`` when ``column`` refuses it."""
        if value.__class__ is not str or len(value) > MAX_STRING:
            return None
        if (column == "source" and value not in SOURCES) or (
            column == "kind" and value not in KINDS
        ):
            return None
        ident = self._ids.get(value)
        if ident is None:
            try:
                payload = value.encode()
            except UnicodeEncodeError:
                shown = repr(value)[:80]
                msg = f"column {column!r}: got {shown} (str); expected text without lone surrogates"
                raise RecordError(msg) from None
            assert self._log is not None
            self._log.frame(STRING, 0, payload)
            ident = self._ids[value] = len(self._ids)
        table[value] = ident
        return ident

    def tag_id(self, value: Any) -> int | None:
        """The id of a tags map in the current log; ``None`` when it breaks the rules."""
        if not _tags_ok(value):
            return None
        key = tuple(value.items())
        ident = self._tags.get(key)
        if ident is None:
            try:
                "".join(k + v for k, v in key).encode()
            except UnicodeEncodeError:
                return None
            assert self._log is not None
            self._log.frame(TAGS, 0, marshal.dumps(dict(value)))
            ident = self._tags[key] = len(self._tags)
        return ident

    def shape(self, keys: tuple[str, ...]) -> Shape:
        """The shape of ``keys`` (schema columns, checked by the caller), created if new."""
        found = self._by_keys.get(keys)
        if found is not None:
            return found
        if len(self.shapes) > _MAX_SHAPE_ID:
            raise RecordError(f"too many distinct sets of columns ({len(self.shapes)})")
        found = Shape(len(self.shapes), keys, _packer(keys, len(self.shapes), self))
        if self._log is not None:
            self._log.frame(SHAPE, found.id, marshal.dumps(keys))
        self._by_keys[keys] = found
        self.shapes.append(found)
        return found

    def put(self, record: Mapping[str, Any], log: Log) -> None:
        """Pack ``record`` as the next row of ``log`` (attached, with room for a row)."""
        try:
            shape = self.find(tuple(record))
        except TypeError:  # not a mapping: the generic path says so
            shape = None
        if shape is None or not shape.put(record, log.map, log.front):
            self.put_slow(record, log)
        else:
            log.front += ROW_BYTES

    def put_slow(self, record: Mapping[str, Any], log: Log) -> None:
        """The generic path of :meth:`put`: full validation, normalisation, then packing.

        Raises :class:`~perfnb.errors.RecordError` naming the column of a bad record.
        """
        clean: dict[str, Any] = {k: _normal(k, v) for k, v in validate_record(record).items()}
        keys = tuple(clean)
        if len(self._by_keys) >= _MAX_SHAPES and keys not in self._by_keys:
            keys = tuple(k for k in COLUMN_NAMES if k in clean)
            clean = {k: clean[k] for k in keys}
        shape = self.shape(keys)
        if not shape.put(clean, log.map, log.front):
            raise RecordError(f"record {clean!r} was accepted by the schema but cannot be stored")
        log.front += ROW_BYTES


class Memory:
    """A :class:`Log` in anonymous memory, for :meth:`Store.append`: grows as needed."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.map = bytearray(size)
        self.front = ROWS_START
        self.back = size
        self.last = size - ROW_BYTES
        self.frames: list[tuple[int, int, bytes]] = []

    @property
    def rows(self) -> int:
        return (self.front - ROWS_START) // ROW_BYTES

    def frame(self, kind: int, ident: int, payload: Any) -> None:
        self.frames.append((kind, ident, bytes(payload)))

    def reserve(self) -> None:
        """Make room for one more row."""
        if self.front > self.last:
            self.map.extend(bytes(len(self.map)))
            self.last = len(self.map) - ROW_BYTES


def _rows(log: Memory) -> np.ndarray:
    return np.frombuffer(log.map, dtype=ROW_DTYPE, count=log.rows, offset=ROWS_START).copy()


def decode(log: Memory) -> pa.Table:
    """The records of an in-memory log as one time-sorted table of :func:`table_schema`."""
    shapes: dict[int, tuple[str, ...]] = {}
    strings: list[str] = []
    tags: list[dict[str, str]] = []
    tables: list[pa.Table] = []
    for kind, ident, payload in log.frames:
        collect(kind, ident, payload, shapes, strings, tags, tables)
    return sort_by_time(table_from_rows(_rows(log), shapes, strings, tags, tables))


def collect(
    kind: int,
    ident: int,
    payload: bytes,
    shapes: dict[int, tuple[str, ...]],
    strings: list[str],
    tags: list[dict[str, str]],
    tables: list[pa.Table],
) -> None:
    """File one decoded frame into the tables it belongs to."""
    if kind == SHAPE:
        shapes[ident] = tuple(marshal.loads(payload))
    elif kind == STRING:
        strings.append(payload.decode())
    elif kind == TAGS:
        tags.append(marshal.loads(payload))
    elif kind == TABLE:
        tables.append(pa.ipc.open_stream(payload).read_all())


def table_from_rows(
    rows: np.ndarray,
    shapes: Mapping[int, tuple[str, ...]],
    strings: list[str],
    tags: list[dict[str, str]],
    tables: Sequence[pa.Table] = (),
) -> pa.Table:
    """Decoded rows (plus whole tables) as one table of :func:`table_schema`, log order."""
    schema = table_schema()
    count = len(rows)
    if count == 0:
        return pa.concat_tables([schema.empty_table(), *tables]) if tables else schema.empty_table()
    shape_of = rows["tag"].astype(np.intp) - 1
    top = max(shapes) + 1 if shapes else 0
    if top == 0 or int(shape_of.max()) >= top or int(shape_of.min()) < 0:
        raise StoreError("a row of the append log refers to a shape it never declared")
    dictionary = pa.array(strings, pa.string())
    arrays = []
    for field in schema:
        name = field.name
        has = np.zeros(top, dtype=bool)
        for ident, keys in shapes.items():
            has[ident] = name in keys
        valid = has[shape_of]
        if not valid.any():
            arrays.append(pa.nulls(count, field.type))
            continue
        everywhere = bool(valid.all())
        mask = None if everywhere else ~valid
        values = rows[name]
        kind = _TYPES[name]
        if kind == "timestamp":
            parts = values.astype(np.int64)
            micros = parts[:, 0] * 86_400_000_000 + parts[:, 1] * 1_000_000 + parts[:, 2]
            arrays.append(pa.array(micros, pa.int64()).cast(field.type))
        elif kind in ("category", "string"):
            arrays.append(
                _text(values, valid, mask, dictionary, dictionary_encoded=kind != "string")
            )
        elif kind == "tags":
            ids = values.tolist()
            maps = [tags[i] if ok else None for i, ok in zip(ids, valid.tolist(), strict=True)]
            arrays.append(pa.array(maps, field.type))
        else:
            arrays.append(pa.array(np.ascontiguousarray(values), field.type, mask=mask))
    table = pa.Table.from_arrays(arrays, schema=schema)
    return pa.concat_tables([table, *tables]) if tables else table


def _text(
    values: np.ndarray,
    valid: np.ndarray,
    mask: np.ndarray | None,
    dictionary: pa.Array,
    *,
    dictionary_encoded: bool,
) -> pa.Array:
    ids = values.astype(np.int64) if mask is None else np.where(valid, values, 0).astype(np.int64)
    present = ids if mask is None else ids[valid]
    if len(present) and int(present.max()) >= len(dictionary):
        raise StoreError("a row of the append log refers to a string it never declared")
    if not dictionary_encoded:
        return dictionary.take(pa.array(ids, pa.int64(), mask=mask))
    # Only the strings this column uses, so each file's dictionary is its own.
    used = np.zeros(len(dictionary), dtype=bool)
    used[present] = True
    remap = (np.cumsum(used, dtype=np.int32) - 1)[ids]
    if mask is not None:
        remap[mask] = 0  # absent: any index will do under the null
    indices = pa.array(remap, pa.int32(), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, dictionary.filter(pa.array(used)))
