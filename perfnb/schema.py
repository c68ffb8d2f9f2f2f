"""The record schema: one row per observed thing.

Every measurement perfnb makes — a request seen by a client, a server or a
browser, a Web Vital, a process sample, a health transition, an alert — is a
*record* of this one schema. Sources build records as plain dicts (typed here as
:class:`Record`); the stream turns them into pandas frames and the store keeps
them as Parquet.

This module is the ground floor: it uses the standard library only, so the
server-side middleware can build and check records without importing pandas or
pyarrow. :func:`arrow_schema` imports pyarrow only when it is called.

>>> from datetime import datetime, timezone
>>> rec = validate_record({
...     "time": datetime(2026, 1, 1, tzinfo=timezone.utc),
...     "source": "server", "kind": "http", "route": "/api/cards/{card_id}",
...     "method": "GET", "status": 200, "duration_ms": 4.2,
... })
>>> rec["route"]
'/api/cards/{card_id}'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from perfnb.errors import RecordError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "INT_RANGES",
    "KINDS",
    "MAX_MS",
    "MAX_TAGS",
    "REQUIRED",
    "SCHEMA_VERSION",
    "SOURCES",
    "Column",
    "Record",
    "Sink",
    "arrow_schema",
    "epoch_us",
    "record_from_json",
    "record_to_json",
    "validate_record",
    "validate_records",
]

#: Bumped whenever a column is added, removed or changes type. Stored in the
#: Parquet metadata of every file under the key ``perfnb.schema_version``.
SCHEMA_VERSION: Final = 1

#: Where a record came from.
SOURCES: Final = frozenset({"client", "server", "browser", "load", "perfnb"})

#: What a record observed. Open for extension by later versions; records with a
#: kind outside this set are refused so that typos do not split the data.
KINDS: Final = frozenset(
    {
        "http",  # one request/response, timed to the last body byte
        "stream",  # a streaming HTTP response (SSE, long poll, file stream)
        "websocket",  # one WebSocket connection, open to close
        "vital",  # a Web Vital (LCP, INP, CLS, FCP, TTFB)
        "navigation",  # a page load or a single-page route change
        "render",  # a component render / User Timing measure / long frame
        "resource",  # a browser resource-timing summary or a fetch/XHR seen by the page
        "process",  # a process sample (RSS, CPU, threads, GC, loop lag)
        "db",  # database time and pool state
        "health",  # a health state transition
        "alert",  # an alert raised or cleared
        "load",  # a load-run event or a per-second load aggregate
        "overhead",  # perfnb's own cost (middleware µs per request)
    }
)

#: Tags are a bounded map: at most this many entries, keys and values capped.
MAX_TAGS: Final = 16
MAX_TAG_KEY: Final = 64
MAX_TAG_VALUE: Final = 256
#: Strings longer than this are refused (error messages are truncated by producers).
MAX_STRING: Final = 4096
#: Millisecond columns (``*_ms``) hold finite values below this in magnitude (about
#: 31,700 years): the store keeps them exactly, to the microsecond, as decimal(18, 3).
MAX_MS: Final = 1e15

_MS_NOTE: Final = (
    " float32 in live frames (exact to the µs below 16 s); the store keeps it exact to"
    " the µs (decimal(18, 3) on disk, INT64 µs) and reads it back as float64."
)

LogicalType = Literal[
    "timestamp", "category", "string", "int16", "int32", "int64", "float32", "float64", "tags"
]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the record schema: its name, logical type, unit and meaning."""

    name: str
    type: LogicalType
    unit: str
    doc: str
    required: bool = False


COLUMNS: Final[tuple[Column, ...]] = (
    Column("time", "timestamp", "UTC, µs", "When the observed thing started.", required=True),
    Column(
        "source",
        "category",
        "",
        "Who observed it: " + ", ".join(sorted(SOURCES)) + ".",
        required=True,
    ),
    Column(
        "kind",
        "category",
        "",
        "What was observed: " + ", ".join(sorted(KINDS)) + ".",
        required=True,
    ),
    Column("service", "category", "", "The monitored service (app name)."),
    Column(
        "route",
        "category",
        "",
        "Route *template* (``/api/cards/{card_id}``), never the raw path; page for browser.",
    ),
    Column("method", "category", "", "HTTP method, or WS for WebSocket connections."),
    Column("status", "int16", "", "HTTP status, WebSocket close code; 0 when none arrived."),
    Column(
        "duration_ms",
        "float32",
        "ms",
        "Duration to the last body byte (whole connection for streams and WebSockets)." + _MS_NOTE,
    ),
    Column(
        "ttfb_ms", "float32", "ms", "Time to first byte of the response (first event)." + _MS_NOTE
    ),
    Column("request_bytes", "int64", "bytes", "Request body size (bytes received for WS)."),
    Column("response_bytes", "int64", "bytes", "Response body size (bytes sent for WS)."),
    Column(
        "server_ms",
        "float32",
        "ms",
        "Time spent in the server: measured by the middleware, or from Server-Timing." + _MS_NOTE,
    ),
    Column("app_ms", "float32", "ms", "Handler time (Server-Timing ``app``)." + _MS_NOTE),
    Column("db_ms", "float32", "ms", "Database time (Server-Timing ``db``)." + _MS_NOTE),
    Column("messages_in", "int32", "messages", "Messages received (WebSocket, SSE)."),
    Column("messages_out", "int32", "messages", "Messages sent (WebSocket, SSE events)."),
    Column(
        "error_type",
        "category",
        "",
        "Error class (exception name, ``timeout``, ``connect``), empty when none.",
    ),
    Column("error_message", "string", "", "Error message, truncated by the producer."),
    Column("run_id", "category", "", "Load run that produced the record; null for real traffic."),
    Column("client", "category", "", "Client or session key (hashed; never a secret)."),
    Column(
        "name",
        "category",
        "",
        "Metric name for non-HTTP records (``LCP``, ``rss_bytes``, ``apiPolling``).",
    ),
    Column("value", "float64", "see unit", "Metric value for non-HTTP records."),
    Column("unit", "category", "", "Unit of ``value`` (``ms``, ``bytes``, ``ratio``, ``state``)."),
    Column(
        "tags",
        "tags",
        "",
        f"Bounded map of string tags (≤ {MAX_TAGS} entries, keys ≤ {MAX_TAG_KEY} chars, "
        f"values ≤ {MAX_TAG_VALUE} chars).",
    ),
)

COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
_BY_NAME: Final[dict[str, Column]] = {c.name: c for c in COLUMNS}
#: The columns every record must have.
REQUIRED: Final = tuple(c.name for c in COLUMNS if c.required)


class Record(TypedDict, total=False):
    """A record as producers build it: a plain dict whose keys are column names.

    Only ``time``, ``source`` and ``kind`` are required; a missing column is null.
    """

    time: datetime
    source: str
    kind: str
    service: str
    route: str
    method: str
    status: int
    duration_ms: float
    ttfb_ms: float
    request_bytes: int
    response_bytes: int
    server_ms: float
    app_ms: float
    db_ms: float
    messages_in: int
    messages_out: int
    error_type: str
    error_message: str
    run_id: str
    client: str
    name: str
    value: float
    unit: str
    tags: dict[str, str]


#: Where records go: anything that takes one record. ``Stream.push``,
#: a store writer's ``append`` and ``list.append`` are all sinks.
Sink = Callable[[Record], None]

#: The value range of each integer type.
INT_RANGES: Final = {
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def _fail(column: str, value: object, accepted: str) -> RecordError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RecordError(f"column {column!r}: got {shown} ({type(value).__name__}); {accepted}")


def _check_time(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise _fail("time", value, "expected a timezone-aware datetime")
    offset = value.utcoffset()
    if offset is None:
        raise _fail("time", value, "naive datetimes are refused: give tzinfo (UTC)")
    return value


def _check_category(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(name, value, "expected a string")
    if len(value) > MAX_STRING:
        raise _fail(name, value, f"expected at most {MAX_STRING} characters")
    return value


def _check_int(name: str, kind: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, value, f"expected an integer ({kind})")
    low, high = INT_RANGES[kind]
    if not low <= value <= high:
        raise _fail(name, value, f"expected an integer in [{low}, {high}] ({kind})")
    return value


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, value, "expected a number")
    if math.isnan(value):
        raise _fail(name, value, "NaN is refused: leave the column out for 'no value'")
    return float(value)


def _check_ms(name: str, value: object) -> float:
    number = _check_float(name, value)
    if not -MAX_MS < number < MAX_MS:
        raise _fail(name, value, f"expected finite milliseconds in (-{MAX_MS:.0e}, {MAX_MS:.0e})")
    return number


def _check_tags(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _fail("tags", value, "expected a dict of str to str")
    if len(value) > MAX_TAGS:
        raise _fail("tags", value, f"expected at most {MAX_TAGS} entries")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise _fail("tags", value, "expected str keys and str values")
        if len(key) > MAX_TAG_KEY or len(item) > MAX_TAG_VALUE:
            raise _fail(
                "tags", value, f"keys ≤ {MAX_TAG_KEY} and values ≤ {MAX_TAG_VALUE} characters"
            )
    return dict(value)


def _checker(col: Column) -> Callable[[object], object]:
    name = col.name
    if col.type == "timestamp":
        return _check_time
    if col.type in ("category", "string"):
        return lambda v: _check_category(name, v)
    if col.type in INT_RANGES:
        kind = col.type
        return lambda v: _check_int(name, kind, v)
    if col.type in ("float32", "float64"):
        if col.unit == "ms":
            return lambda v: _check_ms(name, v)
        return lambda v: _check_float(name, v)
    return _check_tags


_CHECKS: Final[dict[str, Callable[[object], object]]] = {c.name: _checker(c) for c in COLUMNS}

# Generated checkers by key order ("shape"): the fast path of validate_record, built
# by perfnb._fastcheck on a shape's first record. A memo of a pure function of the
# key order, bounded by _fastcheck.MAX_SHAPES: no state that callers could observe.
_SHAPES: Final[dict[tuple[str, ...], Callable[[Mapping[str, object]], Record | None]]] = {}


def _shape_checker(keys: tuple[str, ...]) -> Callable[[Mapping[str, object]], Record | None] | None:
    from perfnb._fastcheck import shape_checker  # reached once per new shape only

    checker = shape_checker(keys, known=len(_SHAPES))
    if checker is not None:
        _SHAPES[keys] = checker
    return checker


def validate_record(record: Mapping[str, object]) -> Record:
    """Check one record against the schema and return it as a :class:`Record`.

    Raises :class:`~perfnb.errors.RecordError` naming the column and the value
    for an unknown column, a wrong type, a naive timestamp, an unknown source or
    kind, or a missing required column. ``None`` stands for null and is allowed
    in every column but the required ones.

    >>> validate_record({"time": 1, "source": "server", "kind": "http"})
    Traceback (most recent call last):
    ...
    perfnb.errors.RecordError: column 'time': got 1 (int); expected a timezone-aware datetime
    """
    if record.__class__ is not dict:
        if not isinstance(record, Mapping):
            raise RecordError(
                f"a record must be a dict of column to value, got {type(record).__name__}"
            )
        # Another mapping (a lazily built client record, say): one copy, and
        # the same checks as a dict.
        record = dict(record.items())
    keys = tuple(record)
    checker = _SHAPES.get(keys) or _shape_checker(keys)
    if checker is not None:
        checked = checker(record)
        if checked is not None:
            return checked
    return _validate_generic(record)


def _validate_generic(record: Mapping[str, object]) -> Record:
    out: dict[str, Any] = {}
    for key, value in record.items():
        check = _CHECKS.get(key)
        if check is None:
            raise RecordError(
                f"unknown column {key!r} (value {value!r}); columns are: {', '.join(COLUMN_NAMES)}"
            )
        if value is None:
            continue
        out[key] = check(value)
    for key in REQUIRED:
        if key not in out:
            raise RecordError(f"column {key!r} is required and missing (or null)")
    if out["source"] not in SOURCES:
        raise _fail("source", out["source"], f"expected one of {sorted(SOURCES)}")
    if out["kind"] not in KINDS:
        raise _fail("kind", out["kind"], f"expected one of {sorted(KINDS)}")
    return out  # type: ignore[return-value]


def validate_records(records: Iterable[Mapping[str, object]]) -> list[Record]:
    """Validate many records; the error names the index of the first bad one."""
    out: list[Record] = []
    for index, record in enumerate(records):
        try:
            out.append(validate_record(record))
        except RecordError as exc:
            raise RecordError(f"record {index}: {exc}") from None
    return out


_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def epoch_us(value: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime.

    >>> epoch_us(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000
    """
    return (value - _EPOCH_UTC) // _ONE_US


def arrow_schema() -> pa.Schema:
    """The record schema as a pyarrow schema, with column docs and units as field metadata.

    Categorical columns are ``dictionary<int32, string>`` in memory and dictionary
    encoded on disk; ``time`` is ``timestamp[us, UTC]``.

    >>> arrow_schema().field("time").type
    TimestampType(timestamp[us, tz=UTC])
    """
    import pyarrow as pa  # the server room never calls this; keep pyarrow off its import path

    types = {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "category": pa.dictionary(pa.int32(), pa.string()),
        "string": pa.string(),
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "tags": pa.map_(pa.string(), pa.string()),
    }
    fields = [
        pa.field(
            c.name,
            types[c.type],
            nullable=not c.required,
            metadata={"doc": c.doc, "unit": c.unit},
        )
        for c in COLUMNS
    ]
    return pa.schema(fields, metadata={"perfnb.schema_version": str(SCHEMA_VERSION)})


def record_to_json(record: Record) -> dict[str, object]:
    """A record in its wire form: ``time`` as an ISO 8601 UTC string, nulls left out.

    This is the form of records in the feed, the beacon intake and JSON exports.

    >>> record_to_json({"time": datetime(2026, 1, 1, tzinfo=UTC), "source": "server",
    ...                 "kind": "http"})["time"]
    '2026-01-01T00:00:00.000000Z'
    """
    out: dict[str, object] = {k: v for k, v in record.items() if v is not None}
    out["time"] = record["time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def record_from_json(obj: Mapping[str, object]) -> Record:
    """The inverse of :func:`record_to_json`, validating as it goes.

    >>> record_from_json({"time": "2026-01-01T00:00:00Z", "source": "server",
    ...                   "kind": "http"})["time"].year
    2026
    """
    if not isinstance(obj, Mapping):
        raise RecordError(f"a record must be a JSON object, got {type(obj).__name__}")
    raw = dict(obj)
    stamp = raw.get("time")
    if isinstance(stamp, str):
        try:
            raw["time"] = datetime.fromisoformat(stamp)
        except ValueError:
            raise _fail("time", stamp, "expected an ISO 8601 time with a UTC offset") from None
    return validate_record(raw)
