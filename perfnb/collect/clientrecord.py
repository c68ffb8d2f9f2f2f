"""The record of one client request, noted on the wire and built when first read.

:func:`perfnb.collect.httpx.instrument` notes a few references and clock
readings per request (method, URL, the header lists, status, times, body size)
in a :class:`ClientRecord`. The record's fields — the route, the service,
sizes, the ``Server-Timing`` split into server and network time — are worked
out from those notes once, the first time anything reads them. The sink gets
the :class:`ClientRecord` itself, so a sink that only keeps records (a ring, a
sampler) costs the request no more than noting, and one that reads each record
pays the building once; with ``instrument(..., lazy=False)`` it is built when
the response ends and the sink gets a plain dict.

The notes are references the request already made (the header lists, the URL)
and clock readings: nothing is copied or decoded on the request path. Once
built, the record drops them, so a record kept after it was read holds only
its dict.

A :class:`ClientRecord` is a read-only :class:`~collections.abc.Mapping` from
column name to value, equal to the plain dict of the same fields.
``Stream.push``, ``Store.append``, a store writer,
:func:`~perfnb.schema.validate_record` and :func:`~perfnb.schema.record_to_json`
take it as it is (the schema checks a mapping on a slower path than a dict, by
a few microseconds);
:meth:`ClientRecord.to_dict` gives a plain dict for anything else
(``json.dumps``).

>>> from perfnb.collect.servertiming import parse_server_timing
>>> split_server_time(parse_server_timing("db;dur=2, app;dur=5"), 9.0)
(5.0, 5.0, 2.0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final

import httpx

# _SIMPLE is the parser's pattern for the usual header shape: the client reads the
# durations it needs straight from its groups (see _split_header).
from perfnb.collect.servertiming import _SIMPLE, ServerTimingMetric, parse_server_timing
from perfnb.schema import MAX_STRING, Record

if TYPE_CHECKING:
    from perfnb.collect.httpx import Instrumentation

__all__ = ["SECRET_HEADERS", "ClientRecord", "split_server_time"]

_log = logging.getLogger("perfnb.collect.httpx")

#: Longest error message kept.
MAX_ERROR_MESSAGE: Final = 300
_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_ONE_US: Final = timedelta(microseconds=1)
#: (lower-case name, value) of a (raw name, lower-case name, value) header triple.
_NAME_VALUE: Final = itemgetter(1, 2)
#: How long a (perf_counter, wall clock) anchor is used before it is taken again.
ANCHOR_NS: Final = 1_000_000_000

#: Request headers whose values are scrubbed from error messages.
SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
    }
)


def split_server_time(
    metrics: Sequence[ServerTimingMetric], duration_ms: float | None = None
) -> tuple[float | None, float | None, float | None]:
    """``(server_ms, app_ms, db_ms)`` from a response's Server-Timing metrics.

    The server's share is the ``total`` metric when there is one, else ``app``
    (perfnb's middleware writes ``app`` as the whole handler time, ``db`` and any
    spans inside it), else the largest duration given: metrics are often nested
    (``db`` inside ``app``), so adding them up would count time twice. Metrics
    with a duration of 0 or less say nothing about time and are ignored. The
    result is capped at ``duration_ms`` (the server cannot take longer than the
    client waited), so ``duration_ms - server_ms`` is the network share, never
    negative. ``app_ms`` and ``db_ms`` are the first ``app`` and ``db`` metrics.

    >>> from perfnb.collect import parse_server_timing
    >>> split_server_time(parse_server_timing("total;dur=50, app;dur=5"), 20.0)
    (20.0, 5.0, None)
    >>> split_server_time(parse_server_timing("cache;desc=hit"))
    (None, None, None)
    """
    total = app = db = None
    largest = 0.0
    for name, dur, _desc in metrics:
        if dur <= 0:
            continue
        if name == "total":
            if total is None:
                total = dur
        elif name == "app":
            if app is None:
                app = dur
        elif name == "db" and db is None:
            db = dur
        largest = max(largest, dur)
    server = total if total is not None else app if app is not None else largest or None
    if server is not None and duration_ms is not None and server > duration_ms:
        server = duration_ms
    return server, app, db


def _split_header(text: str, duration_ms: float) -> tuple[float | None, float | None, float | None]:
    """:func:`split_server_time` of one header value, without building the metrics.

    The common shape (see ``servertiming._SIMPLE``) is read straight from the
    match's groups, four per metric; anything else goes through the full parser.
    """
    match = _SIMPLE.fullmatch(text)
    if match is None:
        return split_server_time(parse_server_timing(text), duration_ms)
    groups = match.groups()
    total = app = db = None
    largest = 0.0
    # Four groups per metric: name, dur, desc token, desc quoted; unused ones None.
    for index in range(0, len(groups), 4):
        name = groups[index]
        if name is None:
            break
        dur = float(groups[index + 1])
        if dur <= 0:
            continue
        if name == "app":
            if app is None:
                app = dur
        elif name == "db":
            if db is None:
                db = dur
        elif name == "total" and total is None:
            total = dur
        if dur > largest:
            largest = dur
    server = total if total is not None else app if app is not None else largest or None
    if server is not None and server > duration_ms:
        server = duration_ms
    return server, app, db


def error_type(exc: BaseException) -> str:
    """The ``error_type`` of a failed request: a kind of failure, or the class name."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.ProxyError):
        return "proxy"
    if isinstance(exc, httpx.NetworkError):
        return "network"
    if isinstance(exc, httpx.ProtocolError):
        return "protocol"
    if type(exc).__name__ == "CancelledError":  # asyncio's, trio's and anyio's
        return "cancelled"
    return type(exc).__name__


def scrub(message: str, url: httpx.URL, headers: httpx.Headers) -> str:
    """The message with the request's secrets replaced: header values, URL extras."""
    secrets = [str(url)]
    if url.query:
        secrets.append(url.query.decode("ascii", "replace"))
    if url.userinfo:
        secrets.append(url.userinfo.decode("ascii", "replace"))
    if url.password:
        secrets.append(url.password)
    for name, value in headers.multi_items():
        if name.lower() in SECRET_HEADERS and len(value) >= 4:
            secrets.append(value)
            secrets.extend(part for part in value.split() if len(part) >= 4)
    safe_url = f"{url.scheme}://{url.host}{'' if url.port is None else f':{url.port}'}{url.path}"
    for secret in sorted(set(secrets), key=len, reverse=True):
        message = message.replace(secret, safe_url if secret == str(url) else "[redacted]")
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return message


def header_items(headers: httpx.Headers) -> list[tuple[bytes, bytes, bytes]]:
    """(raw name, lower-case name, value) triples without decoding anything.

    ``Headers._list`` holds exactly that; reading it directly costs a fraction of
    ``get``/``get_list``, which decode every header. The public fallback keeps this
    working should httpx rename the attribute.
    """
    items = getattr(headers, "_list", None)
    if isinstance(items, list):
        return items
    return [(key, key.lower(), value) for key, value in headers.raw]


#: Header triples as a record keeps them.
Items = Sequence[tuple[bytes, bytes, bytes]]


def path_key(url: httpx.URL) -> str:
    """The URL's path as sent (percent-encoded), to key the route cache.

    ``URL.path`` unquotes on every access, which is most of a cache hit's cost;
    the public property is the fallback should httpx rename its attribute.
    """
    path = getattr(getattr(url, "_uri_reference", None), "path", None)
    return path if isinstance(path, str) else url.path


class ClientRecord(Mapping[str, Any]):
    """One client request's record, worked out from its notes when first read.

    Made by the instrumentation, not by users. ``done`` is false while the
    response body is still being read (the record is handed over when it is
    done). Reading a record before that is allowed and builds it from what
    was seen so far.
    """

    # Slots, all set in __init__: a slotted instance is made in half the time of
    # one with a __dict__, and noting a request is most of what it costs.
    __slots__ = (
        "_data",
        "_end",
        "_inst",
        "_method",
        "_req",
        "_resp",
        "_start",
        "_status",
        "_ttfb",
        "_url",
        "error",
        "size",
    )

    def __init__(
        self,
        inst: Instrumentation,
        request: httpx.Request,
        start: int,
        ttfb: int = -1,
        response: httpx.Response | None = None,
    ) -> None:
        self._inst = inst
        self._method = request.method
        self._url = request.url
        try:
            # The header lists themselves, not the Headers objects around them:
            # a record a sink keeps holds fewer objects for the collector to visit.
            self._req: Items = request.headers._list
        except AttributeError:  # should httpx rename its attribute
            self._req = header_items(request.headers)
        self._start = start
        #: perf_counter ns of the response headers (-1: none arrived).
        self._ttfb = ttfb
        if response is None:
            self._status = 0
            self._resp: Items | None = None
        else:
            self._status = response.status_code
            try:
                self._resp = response.headers._list
            except AttributeError:
                self._resp = header_items(response.headers)
        #: perf_counter ns of the end of the exchange (0 while it goes on).
        self._end = 0
        self._data: Record | None = None
        #: Body bytes received so far.
        self.size = 0
        #: (error_type, scrubbed message) of a failed request.
        self.error: tuple[str, str] | None = None

    @property
    def done(self) -> bool:
        """Whether the exchange ended (the record was handed to the sink)."""
        return self._end != 0

    def fail(self, exc: BaseException, request: httpx.Request) -> None:
        """Note the exception that ended ``request`` (kept as text, not as the object)."""
        message = scrub(f"{type(exc).__name__}: {exc}", request.url, request.headers)
        self.error = (error_type(exc), message)

    def end(self) -> None:
        """Note the end of the exchange, now; hand the record to the sink once.

        A sink that raises is counted (``Instrumentation.sink_errors``), never raised.
        """
        if self._end:
            return
        self._end = perf_counter_ns()
        inst = self._inst
        try:
            inst.deliver(self)
        except Exception:
            inst.sink_error()
        else:
            inst.records += 1

    # -- the Mapping ----------------------------------------------------------------

    def _safe_build(self) -> Record:
        try:
            return self._build()
        except Exception:  # a bug here must not break whoever reads the record
            _log.exception("perfnb could not build a client record")
            anchor_ns, anchor_time = self._inst.anchor
            return {
                "time": anchor_time + _ONE_US * ((self._start - anchor_ns) // 1000),
                "source": "client",
                "kind": "http",
                "error_type": "PerfnbInternalError",
            }

    def _record(self) -> Record:
        data = self._data
        if data is None:
            data = self._safe_build()
            if self._end:
                # Notes are dropped once built: the record no longer holds the
                # request's header objects alive.
                self._data = data
                self._req = self._resp = ()
        return data

    def _build(self) -> Record:
        # Written for speed: a sink that reads every record runs this once per request.
        inst = self._inst
        method = self._method
        url = self._url
        start = self._start
        end = self._end or perf_counter_ns()
        duration = (end - start) / 1e6
        # dict(map(itemgetter)) reads the header triples in C; a repeated request
        # header keeps its last value, as a loop assigning each would.
        req = dict(map(_NAME_VALUE, self._req))
        host = req.get(b"host")
        length = req.get(b"content-length")
        run_id = req.get(b"x-perfnb-run")
        try:
            path = url._uri_reference.path
        except AttributeError:
            path = path_key(url)
        # Whichever anchor is current: the clocks agree across the second or so
        # between two anchors, and a record need not carry its own.
        anchor_ns, anchor_time = inst.anchor
        kind = "http"
        timing: bytes | list[bytes] | None = None
        resp = self._resp
        if resp is not None:
            headers = dict(map(_NAME_VALUE, resp))
            if len(headers) == len(resp):
                timing = headers.get(b"server-timing")
                content_type = headers.get(b"content-type")
                if content_type is not None and content_type.startswith(b"text/event-stream"):
                    kind = "stream"
            else:  # a header repeated: every Server-Timing value counts
                timing = [value for _, key, value in resp if key == b"server-timing"] or None
                if any(
                    key == b"content-type" and value.startswith(b"text/event-stream")
                    for _, key, value in resp
                ):
                    kind = "stream"
        record: Record = {
            "time": anchor_time + _ONE_US * ((start - anchor_ns) // 1000),
            "source": "client",
            "kind": kind,
            "service": inst.service or inst._services.get(host) or inst.service_of(host, url),
            "route": inst._routes.get(path) or inst.route_of(url, path),
            "method": method,
            "status": self._status,
            "duration_ms": duration,
        }
        if resp is not None:
            record["ttfb_ms"] = (self._ttfb - start) / 1e6
            record["response_bytes"] = self.size
        if length is not None and length.isdigit():
            record["request_bytes"] = int(length)
        elif method in _BODYLESS:
            record["request_bytes"] = 0
        if run_id:
            record["run_id"] = run_id[:MAX_STRING].decode("latin-1")
        if timing is not None:
            if isinstance(timing, bytes):
                server, app, db = _split_header(timing.decode("latin-1"), duration)
            else:
                metrics = parse_server_timing([value.decode("latin-1") for value in timing])
                server, app, db = split_server_time(metrics, duration)
            if server is not None:
                record["server_ms"] = server
                if app is not None:
                    record["app_ms"] = app
                if db is not None:
                    record["db_ms"] = db
        if self.error is not None:
            record["error_type"], record["error_message"] = self.error
        return record

    def __getitem__(self, key: str) -> Any:
        # dict(record) calls this once per column: the built dict is read directly.
        data = self._data
        if data is None:
            data = self._record()
        return data[key]  # type: ignore[literal-required]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record())

    def __len__(self) -> int:
        return len(self._record())

    def __contains__(self, key: object) -> bool:
        return key in self._record()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of column ``key``, or ``default`` when the record has none."""
        return self._record().get(key, default)

    def keys(self) -> KeysView[str]:
        """The record's columns."""
        return self._record().keys()

    def values(self) -> ValuesView[Any]:
        """The record's values."""
        return self._record().values()

    def items(self) -> ItemsView[str, Any]:
        """(column, value) pairs."""
        return self._record().items()

    def to_dict(self) -> Record:
        """The record as a new plain dict.

        >>> import httpx
        >>> from perfnb.collect.httpx import instrument
        >>> seen = []
        >>> client = instrument(httpx.Client(transport=httpx.MockTransport(
        ...     lambda request: httpx.Response(204))), sink=seen.append, lazy=True)
        >>> type(client.delete("http://127.0.0.1/cards/7") and seen[0].to_dict()).__name__
        'dict'
        """
        return dict(self._record())  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClientRecord):
            return self._record() == other._record()
        if isinstance(other, Mapping):
            return self._record() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ClientRecord({self._record()!r})"


#: Takes a (perf_counter ns, wall clock) anchor: the clock reading, then the time.
def take_anchor(clock: Callable[[], int] = perf_counter_ns) -> tuple[int, datetime]:
    """A fresh (perf_counter ns, aware datetime) pair to date records by."""
    return clock(), datetime.now(UTC)
