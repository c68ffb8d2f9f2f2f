"""Browser beacon batches: the wire shape, and turning a batch into records.

The browser script collects Web Vitals, navigations, render measures, resource
timings and heap samples and sends them in batches, either as the body of
``POST <prefix>/beacon`` or piggybacked on the app's own requests in the
``X-Perfnb-Beacon`` request header (base64url-encoded JSON, padding optional,
at most :attr:`BeaconLimits.header_bytes` encoded bytes).

A batch (version 1) is one JSON object::

    {
      "v": 1,                      # required, the batch format version
      "page": "/cards/42",         # required, location.pathname of the page
      "session": "k3j2h4",         # optional, a random per-tab id (≤ 128 chars)
      "records": [                 # required, at most BeaconLimits.records entries
        {"kind": "vital", "name": "LCP", "value": 1234.5, "unit": "ms", "t": 1767225600000},
        {"kind": "navigation", "t": 1767225600000, "duration_ms": 88.0, "ttfb_ms": 21.5},
        {"kind": "render", "name": "CardList", "t": 1767225600100, "duration_ms": 12.0},
        {"kind": "resource", "t": 1767225600200, "route": "/api/cards", "method": "GET",
         "status": 200, "duration_ms": 45.1, "response_bytes": 5120},
        {"kind": "process", "name": "js_heap_bytes", "value": 24641536, "unit": "bytes",
         "t": 1767225600300}
      ]
    }

Record fields (anything else makes that record invalid):

============== ======================================================= ==========
field          meaning                                                 required
============== ======================================================= ==========
kind           ``vital``, ``navigation``, ``render``, ``resource``,      yes
               ``process``
t              when it happened, epoch milliseconds (within a day of    yes
               the server's clock)
name           metric name (``LCP``, ``INP``, ``CLS``, a component)     no
value, unit    metric value (finite number) and its unit (``ms``,       no
               ``bytes``, ``score``, ``count``)
duration_ms    duration (≥ 0, finite)                                  no
ttfb_ms        time to first byte (≥ 0, finite)                        no
route          the route the page moved to or fetched (else ``page``)  no
method, status HTTP method and status of a fetch/XHR                   no
request_bytes, sizes of a fetch/XHR (integers ≥ 0)                     no
response_bytes
error_type,    a JavaScript error's class and message (the message is   no
error_message  truncated to 512 characters)
tags           a small map of string to string                         no
============== ======================================================= ==========

Each valid record becomes a schema record with ``source="browser"``, the
monitor's ``service``, ``route`` from the record or the page (query string and
fragment removed, numeric and UUID-like path segments replaced by ``{id}``, and
at most :attr:`BeaconLimits.pages` distinct routes, the rest as ``(other)``), and
``client`` a salted hash of the session (or of the client address). A batch whose
envelope is wrong is dropped whole; a wrong record inside a good envelope is
dropped alone. Both are counted by the monitor, never raised into the app.

>>> batch = encode_header({"v": 1, "page": "/", "records": []})
>>> decode_header(batch)
{'v': 1, 'page': '/', 'records': []}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NotRequired, TypedDict

from perfnb.errors import RecordError
from perfnb.schema import Record, validate_record

__all__ = [
    "BEACON_HEADER",
    "BEACON_VERSION",
    "BROWSER_KINDS",
    "BeaconBatch",
    "BeaconLimits",
    "BeaconRecord",
    "PageNames",
    "batch_records",
    "client_key",
    "decode_body",
    "decode_header",
    "encode_header",
]

#: The batch format version this module reads.
BEACON_VERSION: Final = 1
#: The request header that carries batches on the app's own requests.
BEACON_HEADER: Final = "X-Perfnb-Beacon"
#: Record kinds a browser may send.
BROWSER_KINDS: Final = frozenset({"vital", "navigation", "render", "resource", "process"})

_DAY_MS: Final = 86_400_000.0
_HEADER_BYTES: Final = 8 * 1024
_MAX_MESSAGE: Final = 512


class BeaconRecord(TypedDict):
    """One measurement in a batch (see the table in the module docs)."""

    kind: str
    t: float
    name: NotRequired[str]
    value: NotRequired[float]
    unit: NotRequired[str]
    duration_ms: NotRequired[float]
    ttfb_ms: NotRequired[float]
    route: NotRequired[str]
    method: NotRequired[str]
    status: NotRequired[int]
    request_bytes: NotRequired[int]
    response_bytes: NotRequired[int]
    error_type: NotRequired[str]
    error_message: NotRequired[str]
    tags: NotRequired[dict[str, str]]


class BeaconBatch(TypedDict):
    """A batch as the browser sends it."""

    v: int
    page: str
    session: NotRequired[str]
    records: list[BeaconRecord]


@dataclass(frozen=True, slots=True)
class BeaconLimits:
    """Size caps on browser input.

    >>> BeaconLimits().header_bytes
    8192
    """

    #: Largest ``POST .../beacon`` body accepted; larger gets 413 unread.
    body_bytes: int = 64 * 1024
    #: Largest ``X-Perfnb-Beacon`` header value accepted (encoded length).
    header_bytes: int = _HEADER_BYTES
    #: Most records in one batch; a longer batch is dropped whole.
    records: int = 200
    #: Most distinct browser routes kept; later ones become ``(other)``.
    pages: int = 1000


def _reject_constant(name: str) -> float:
    msg = f"JSON constant {name} is refused; send finite numbers only"
    raise RecordError(msg)


def _loads(data: bytes | str) -> object:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecordError:
        raise
    except (ValueError, RecursionError) as exc:
        msg = f"beacon batch is not valid JSON ({type(exc).__name__})"
        raise RecordError(msg) from None


def decode_body(body: bytes) -> object:
    """Parse a ``POST .../beacon`` body as JSON; :class:`RecordError` when it is not."""
    return _loads(body)


def decode_header(value: str | bytes, *, max_bytes: int = _HEADER_BYTES) -> object:
    """Decode an ``X-Perfnb-Beacon`` value (base64url JSON, padding optional).

    Raises :class:`RecordError` for an oversized value, bad base64 or bad JSON.
    """
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    raw = raw.strip()
    if len(raw) > max_bytes:
        msg = f"{BEACON_HEADER}: {len(raw)} bytes; at most {max_bytes} are accepted"
        raise RecordError(msg)
    raw = raw.rstrip(b"=")
    padded = raw + b"=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        msg = f"{BEACON_HEADER}: not base64url (alphabet A-Z a-z 0-9 - _)"
        raise RecordError(msg) from None
    return _loads(data)


def encode_header(batch: Mapping[str, object]) -> str:
    """The ``X-Perfnb-Beacon`` value for ``batch`` (base64url, no padding)."""
    data = json.dumps(batch, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,})$"
)


class PageNames:
    """Turns browser paths into a bounded set of route names.

    >>> pages = PageNames(limit=2)
    >>> pages.name("/cards/42?tab=1"), pages.name("/cards/7"), pages.name("/a"), pages.name("/b")
    ('/cards/{id}', '/cards/{id}', '/a', '(other)')
    """

    OTHER: Final = "(other)"

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def name(self, path: str) -> str:
        """The bounded route name for ``path``."""
        path = path.split("?", 1)[0].split("#", 1)[0][:256] or "/"
        if not path.startswith("/"):
            path = "/" + path
        parts = ["{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/")]
        route = "/".join(parts)
        if route in self._seen:
            return route
        with self._lock:
            if len(self._seen) >= self._limit:
                return self.OTHER
            self._seen.add(route)
        return route


def _number(field: str, value: object, *, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"beacon record field {field!r}: got {value!r}; expected a number"
        raise RecordError(msg)
    number = float(value)
    if not math.isfinite(number) or (low is not None and number < low):
        msg = f"beacon record field {field!r}: got {value!r}; expected a finite number"
        msg += f" ≥ {low:g}" if low is not None else ""
        raise RecordError(msg)
    return number


def _integer(field: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        msg = f"beacon record field {field!r}: got {value!r}; expected an integer in [0, {high}]"
        raise RecordError(msg)
    return value


def _text(field: str, value: object, limit: int, *, truncate: bool = False) -> str:
    if not isinstance(value, str):
        msg = f"beacon record field {field!r}: got {type(value).__name__}; expected a string"
        raise RecordError(msg)
    if len(value) > limit:
        if truncate:
            return value[:limit]
        msg = f"beacon record field {field!r}: {len(value)} characters; at most {limit}"
        raise RecordError(msg)
    return value


_TEXT_LIMITS: Final = {"name": 128, "unit": 16, "method": 16, "error_type": 128}
_FIELDS: Final = frozenset(BeaconRecord.__annotations__)


def client_key(secret: bytes, value: str) -> str:
    """A salted, shortened hash: stable within one process, useless for recovery."""
    return hashlib.blake2b(value.encode("utf-8", "replace"), key=secret, digest_size=8).hexdigest()


def _one(
    raw: object,
    *,
    page: str,
    pages: PageNames,
    base: Record,
    now_ms: float,
) -> Record:
    if not isinstance(raw, dict):
        msg = f"beacon record: got {type(raw).__name__}; expected a JSON object"
        raise RecordError(msg)
    unknown = raw.keys() - _FIELDS
    if unknown:
        msg = f"beacon record: unknown field {sorted(unknown)[0]!r}; accepted: {sorted(_FIELDS)}"
        raise RecordError(msg)
    kind = raw.get("kind")
    if kind not in BROWSER_KINDS:
        msg = f"beacon record field 'kind': got {kind!r}; expected one of {sorted(BROWSER_KINDS)}"
        raise RecordError(msg)
    if "t" not in raw:
        msg = "beacon record field 't' is required (epoch milliseconds)"
        raise RecordError(msg)
    t = _number("t", raw["t"])
    if abs(t - now_ms) > _DAY_MS:
        msg = f"beacon record field 't': {t!r} is more than a day away from the server's clock"
        raise RecordError(msg)
    out: dict[str, object] = dict(base)
    out["time"] = datetime.fromtimestamp(t / 1000.0, UTC)
    out["kind"] = kind
    route = raw.get("route")
    out["route"] = pages.name(_text("route", route, 2048)) if route is not None else page
    for field, value in raw.items():
        if field in ("kind", "t", "route") or value is None:
            continue
        if field in _TEXT_LIMITS:
            out[field] = _text(field, value, _TEXT_LIMITS[field])
        elif field == "error_message":
            out[field] = _text(field, value, _MAX_MESSAGE, truncate=True)
        elif field == "value":
            out[field] = _number(field, value)
        elif field in ("duration_ms", "ttfb_ms"):
            out[field] = _number(field, value, low=0.0)
        elif field == "status":
            out[field] = _integer(field, value, 999)
        elif field in ("request_bytes", "response_bytes"):
            out[field] = _integer(field, value, 2**53)
        else:  # tags: the schema checks the shape and the bounds
            out[field] = value
    return validate_record(out)


def batch_records(
    batch: object,
    *,
    service: str,
    pages: PageNames,
    secret: bytes,
    now_ms: float,
    limits: BeaconLimits,
    client: str | None = None,
    route: str | None = None,
    run_id: str | None = None,
) -> tuple[list[Record], list[str]]:
    """Turn a decoded batch into schema records.

    Returns the valid records and one error message per invalid record. Raises
    :class:`RecordError` naming the field when the envelope itself is wrong (the
    whole batch is then dropped). ``route`` stands in for a missing page and
    ``client`` (an address) for a missing session.
    """
    if not isinstance(batch, dict):
        msg = f"beacon batch: got {type(batch).__name__}; expected a JSON object"
        raise RecordError(msg)
    unknown = batch.keys() - {"v", "page", "session", "records"}
    if unknown:
        msg = f"beacon batch: unknown field {sorted(unknown)[0]!r}"
        msg += "; accepted: v, page, session, records"
        raise RecordError(msg)
    version = batch.get("v")
    if version != BEACON_VERSION or isinstance(version, bool):
        msg = f"beacon batch field 'v': got {version!r}; expected {BEACON_VERSION}"
        raise RecordError(msg)
    raw_page = batch.get("page", route)
    if not isinstance(raw_page, str):
        msg = f"beacon batch field 'page': got {type(raw_page).__name__}; expected a path string"
        raise RecordError(msg)
    page = pages.name(_text("page", raw_page, 2048))
    session = batch.get("session")
    if session is not None:
        session = _text("session", session, 128)
    items = batch.get("records")
    if not isinstance(items, list):
        msg = f"beacon batch field 'records': got {type(items).__name__}; expected a list"
        raise RecordError(msg)
    if len(items) > limits.records:
        msg = f"beacon batch field 'records': {len(items)} records; at most {limits.records}"
        raise RecordError(msg)
    base: Record = {"source": "browser", "service": service}
    who = session or client
    if who:
        base["client"] = client_key(secret, who)
    if run_id:
        base["run_id"] = run_id
    records: list[Record] = []
    errors: list[str] = []
    for index, raw in enumerate(items):
        try:
            records.append(_one(raw, page=page, pages=pages, base=base, now_ms=now_ms))
        except RecordError as exc:
            errors.append(f"record {index}: {exc}")
    return records, errors
