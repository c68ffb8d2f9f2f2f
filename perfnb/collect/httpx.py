"""Client-side instrumentation of httpx: one record per request, timed to the last byte.

:func:`instrument` wraps the transports of an ``httpx.Client`` or
``httpx.AsyncClient`` so that every request on the wire (each redirect hop too)
becomes one record (``source="client"``, ``kind="http"``, or ``"stream"`` for
``text/event-stream`` responses) in the given sink:

- ``duration_ms`` runs from handing the request to the transport to the last byte
  of the response body (or to ``close()`` when the body is abandoned);
  ``ttfb_ms`` to the response headers;
- ``route`` is the URL path with id-like segments collapsed (``/cards/42`` becomes
  ``/cards/{id}``), or what a ``route=`` callable makes of the path; the query
  string is never recorded;
- ``request_bytes`` comes from ``Content-Length`` (null for streamed uploads
  without one); ``response_bytes`` counts the body bytes as they arrive (before
  content decoding);
- ``server_ms``, ``app_ms`` and ``db_ms`` come from the response's
  ``Server-Timing`` (see :func:`split_server_time`), so that
  ``duration_ms - server_ms`` is the network (and client) share;
- a timeout, connection failure or other error becomes a record with
  ``error_type`` (``timeout``, ``connect``, ``network``, ``protocol``, ``proxy``,
  ``cancelled`` or the exception's class name) before the exception is re-raised
  unchanged; ``status`` is 0 when no response arrived;
- ``X-Perfnb-Run`` on the request is recorded as ``run_id``.

Header values, cookies, credentials in the URL and the query string are never
recorded: error messages are scrubbed of them before they are kept.

A sink that raises never breaks the request: the failure is logged once and
counted in :attr:`Instrumentation.sink_errors`.

The sink receives each record as a plain dict when the response ends.
``instrument(..., lazy=True)`` hands it a
:class:`~perfnb.collect.clientrecord.ClientRecord` instead: a read-only mapping
of the record's columns whose fields are worked out when it is first read, so
the request pays only for noting what it saw (about a third of what building
the dict costs; ``python -m benchmarks httpx``). ``Stream.push``,
``Store.append``, a store writer, :func:`~perfnb.schema.validate_record` and
:func:`~perfnb.schema.record_to_json` take it as it is; ``record.to_dict()``
gives a plain dict for anything else (``json.dumps``). A sink that reads every
record pays the building then, once per record.

>>> import httpx
>>> records = []
>>> def app(request):
...     return httpx.Response(200, headers={"Server-Timing": "app;dur=3"}, text="hi")
>>> client = instrument(httpx.Client(transport=httpx.MockTransport(app)),
...                     sink=records.append, service="demo")
>>> client.get("http://demo.test/cards/42?token=secret").text
'hi'
>>> r = records[0]
>>> r["route"], r["status"], r["app_ms"], r["response_bytes"]
('/cards/{id}', 200, 3.0, 2)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from time import perf_counter_ns
from typing import Any, Final, TypeVar, cast

import httpx

from perfnb.collect.clientrecord import (
    ANCHOR_NS,
    ClientRecord,
    _split_header,
    split_server_time,
    take_anchor,
)
from perfnb.collect.clientrecord import (
    MAX_ERROR_MESSAGE as MAX_ERROR_MESSAGE,
)
from perfnb.collect.clientrecord import (
    SECRET_HEADERS as SECRET_HEADERS,
)
from perfnb.errors import ConfigError
from perfnb.schema import Sink

__all__ = [
    "ClientRecord",
    "Instrumentation",
    "default_route",
    "instrument",
    "instrumentation",
    "split_server_time",
    "uninstrument",
]

# Kept importable from here, where it was first defined: the tests check the
# split against the full parser.
_ = _split_header

_log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)

#: Longest route kept; longer paths are cut (they are almost always junk or scans).
MAX_ROUTE: Final = 256
#: Routes remembered per instrumented client, so a path is mapped once.
_ROUTE_CACHE_SIZE: Final = 2048

# A path segment that names one thing rather than a kind of thing: a UUID, a long
# hex or base64-ish token with digits in it.
_ID_SEGMENT: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}"
    r"|(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}"
)


def default_route(path: str) -> str:
    """The route recorded for a URL path: id-like segments become ``{id}``.

    Digits-only segments, UUIDs, long hex strings and long tokens with digits in
    them are collapsed so that the number of routes stays bounded.

    >>> default_route("/api/cards/42/comments/9f8c2d4e-1b7a-4c3e-9d2f-0a1b2c3d4e5f")
    '/api/cards/{id}/comments/{id}'
    >>> default_route("/static/app.v2.js")
    '/static/app.v2.js'
    """
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part and (part.isdigit() or (len(part) >= 16 and _ID_SEGMENT.fullmatch(part))):
            parts[index] = "{id}"
    route = "/".join(parts)
    return route if len(route) <= MAX_ROUTE else route[:MAX_ROUTE]


class Instrumentation:
    """What :func:`instrument` installed on one client: its settings and counters.

    ``records`` counts records handed to the sink, ``sink_errors`` those the sink
    refused by raising.
    """

    def __init__(
        self,
        *,
        sink: Sink,
        service: str | None,
        route: Callable[[str], str],
        lazy: bool = False,
    ) -> None:
        self.sink = sink
        #: Whether the sink gets ClientRecords (built when read) rather than
        #: dicts (the default).
        self.lazy = lazy
        self.service = service
        self.route = route
        self.records = 0
        self.sink_errors = 0
        self._routes: dict[str, str] = {}
        self._services: dict[bytes | None, str] = {}
        #: (perf_counter ns, wall clock) that records are dated by, and when it
        #: is next taken: one clock read per request instead of two.
        self.anchor: tuple[int, datetime] = take_anchor()
        self.anchor_until = self.anchor[0] + ANCHOR_NS
        #: Hands an ended record to the sink: the ClientRecord itself (a Mapping
        #: of the record's columns, which the schema's checks, streams and stores
        #: take), or the plain dict built from it when ``lazy`` is false.
        self.deliver: Callable[[ClientRecord], None] = (
            cast("Callable[[ClientRecord], None]", sink) if lazy else self._deliver_dict
        )

    def _deliver_dict(self, record: ClientRecord) -> None:
        self.sink(record._safe_build())

    def new_anchor(self) -> None:
        """Take the clock anchor again (once a second at most, from the request path)."""
        self.anchor = take_anchor()
        self.anchor_until = self.anchor[0] + ANCHOR_NS

    def sink_error(self) -> None:
        """Count a record the sink refused by raising (call in ``except``); log the first."""
        self.sink_errors += 1
        if self.sink_errors == 1:
            _log.exception("perfnb sink %r refused a client record", self.sink)

    def route_of(self, url: httpx.URL, key: str) -> str:
        """The route recorded for ``url`` (``key``: its path as sent), cached."""
        route = self._routes.get(key)
        if route is None:
            try:
                route = str(self.route(url.path))[:MAX_ROUTE]
            except Exception:
                _log.exception("route function %r raised on a path", self.route)
                route = "{unmatched}"
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()  # many distinct paths: start over rather than grow
            self._routes[key] = route
        return route

    def service_of(self, host: bytes | None, url: httpx.URL) -> str:
        """The service recorded: the ``Host`` header as sent (``host[:port]``), cached."""
        if host is None:
            return url.host if url.port is None else f"{url.host}:{url.port}"
        service = self._services.get(host)
        if service is None:
            service = host[:MAX_ROUTE].decode("latin-1")
            if len(self._services) >= _ROUTE_CACHE_SIZE:
                self._services.clear()
            self._services[host] = service
        return service


class _SyncBody(httpx.SyncByteStream):
    """The response body as httpx reads it: counts bytes, ends the record at the last."""

    __slots__ = ("inner", "record", "request")

    def __init__(
        self, inner: httpx.SyncByteStream, record: ClientRecord, request: httpx.Request
    ) -> None:
        self.inner = inner
        self.record = record
        # Kept for an error's message, which is scrubbed of the request's secrets.
        self.request = request

    def __iter__(self) -> Iterator[bytes]:
        record = self.record
        try:
            for chunk in self.inner:
                # On the record at once: a reader that stops early closes the
                # stream while this generator is still suspended.
                record.size += len(chunk)
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early; close() ends the record
        except BaseException as exc:
            record.fail(exc, self.request)
            record.end()
            raise
        record.end()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.record.end()


class _AsyncBody(httpx.AsyncByteStream):
    """The response body of an async client: the record ends when httpx closes it.

    The chunks pass straight from the inner stream to httpx: a coroutine of our
    own per chunk, and the end of iteration re-raised through it, would cost
    more than the rest of the instrumentation. httpx closes the stream right
    after its last chunk (``Response.aiter_raw``), or when the reader gives up,
    so ``aclose`` is where the record ends; the byte count is the response's
    ``num_bytes_downloaded``, taken then.

    A transport error or cancellation that broke off the body is being handled
    when httpx closes the stream (``AsyncClient.send`` and ``AsyncClient.stream``
    close it on the way out), so ``aclose`` notes it; one that was already being
    handled when the request started (a retry in an ``except`` block) is not
    this exchange's. Other exceptions are left out: they come from the reader's
    own code, whose messages may hold anything.
    """

    __slots__ = ("inner", "outer", "record", "request", "response")

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        record: ClientRecord,
        request: httpx.Request,
        response: httpx.Response,
        outer: BaseException | None,
    ) -> None:
        self.inner = inner
        self.record = record
        self.request = request
        # The response already refers to its stream (httpx binds them both
        # ways), so this adds no new reference cycle.
        self.response = response
        self.outer = outer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.inner.__aiter__()

    async def aclose(self) -> None:
        record = self.record
        if not record.done:
            exc = sys.exception()
            if (
                exc is not None
                and exc is not self.outer
                and (isinstance(exc, httpx.RequestError) or type(exc).__name__ == "CancelledError")
            ):
                record.fail(exc, self.request)
            record.size = self.response.num_bytes_downloaded
        try:
            await self.inner.aclose()
        finally:
            record.end()


def _failed(inst: Instrumentation, request: httpx.Request, start: int, exc: BaseException) -> None:
    """Record a request that got no response (called in ``except``)."""
    record = ClientRecord(inst, request, start)
    record.fail(exc, request)
    record.end()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, inst: Instrumentation) -> None:
        self.inner = inner
        self.inst = inst

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Every request runs this: it only notes references and clock readings.
        inst = self.inst
        start = perf_counter_ns()
        if start >= inst.anchor_until:
            inst.new_anchor()
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            _failed(inst, request, start, exc)
            raise
        ttfb = perf_counter_ns()
        record = ClientRecord(inst, request, start, ttfb, response)
        if response.is_stream_consumed:
            # Built with its body already read (MockTransport, ASGI/WSGI transports):
            # the body arrived with the headers, nothing more will be read.
            # ClientRecord.end() at ttfb, written out: the call costs ~1 µs here.
            record.size = len(response.content)
            record._end = ttfb
            try:
                inst.deliver(record)
            except Exception:
                inst.sink_error()
            else:
                inst.records += 1
        else:
            response.stream = _SyncBody(response.stream, record, request)  # type: ignore[arg-type]
        return response

    def __enter__(self) -> _SyncTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)

    def close(self) -> None:
        self.inner.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, inst: Instrumentation) -> None:
        self.inner = inner
        self.inst = inst

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inst = self.inst
        start = perf_counter_ns()
        if start >= inst.anchor_until:
            inst.new_anchor()
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            _failed(inst, request, start, exc)
            raise
        ttfb = perf_counter_ns()
        record = ClientRecord(inst, request, start, ttfb, response)
        if response.is_stream_consumed:
            record.size = len(response.content)
            record._end = ttfb  # ClientRecord.end() at ttfb, written out as above
            try:
                inst.deliver(record)
            except Exception:
                inst.sink_error()
            else:
                inst.records += 1
        else:
            response.stream = _AsyncBody(
                response.stream,  # type: ignore[arg-type]
                record,
                request,
                response,
                sys.exception(),
            )
        return response

    async def __aenter__(self) -> _AsyncTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.inner.__aexit__(*args)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _wrap(transport: Any, inst: Instrumentation, is_async: bool) -> Any:
    if transport is None:
        return None
    return _AsyncTransport(transport, inst) if is_async else _SyncTransport(transport, inst)


def _unwrap(transport: Any) -> Any:
    return transport.inner if isinstance(transport, _SyncTransport | _AsyncTransport) else transport


def instrumentation(client: httpx.Client | httpx.AsyncClient) -> Instrumentation | None:
    """The :class:`Instrumentation` installed on ``client``, or ``None``."""
    transport = getattr(client, "_transport", None)
    if isinstance(transport, _SyncTransport | _AsyncTransport):
        return transport.inst
    return None


def instrument(
    client: ClientT,
    *,
    sink: Sink,
    service: str | None = None,
    route: Callable[[str], str] = default_route,
    lazy: bool = False,
) -> ClientT:
    """Record every request ``client`` makes into ``sink``; returns the client.

    ``service`` names the service called (default: the URL's ``host[:port]``);
    ``route`` maps a URL path to the route recorded (default
    :func:`default_route`; give your own to map paths to your API's templates).
    Works on ``httpx.Client`` and ``httpx.AsyncClient``, including clients with
    mounts or proxies. :func:`uninstrument` takes it off again. The sink gets
    plain dicts; ``lazy=True`` hands it
    :class:`~perfnb.collect.clientrecord.ClientRecord` mappings, built when
    first read (see the module's notes).

    >>> import httpx
    >>> seen = []
    >>> with instrument(httpx.Client(transport=httpx.MockTransport(
    ...         lambda request: httpx.Response(204))), sink=seen.append) as client:
    ...     client.delete("http://127.0.0.1:8000/api/cards/7").status_code
    204
    >>> seen[0]["service"], seen[0]["route"], seen[0]["method"]
    ('127.0.0.1:8000', '/api/cards/{id}', 'DELETE')
    """
    if not isinstance(client, httpx.Client | httpx.AsyncClient):
        raise ConfigError(
            f"client: got {type(client).__name__}; expected an httpx.Client or httpx.AsyncClient"
        )
    if not callable(sink):
        raise ConfigError(f"sink: got {sink!r}; expected a callable that takes a record")
    if not callable(route):
        raise ConfigError(f"route: got {route!r}; expected a callable from path to route")
    if service is not None and not isinstance(service, str):
        raise ConfigError(f"service: got {service!r}; expected a string or None")
    if not isinstance(lazy, bool):
        raise ConfigError(f"lazy: got {lazy!r}; expected True or False")
    if instrumentation(client) is not None:
        raise ConfigError(
            f"client {client!r} is already instrumented: call uninstrument(client) first"
        )
    inst = Instrumentation(sink=sink, service=service, route=route, lazy=lazy)
    is_async = isinstance(client, httpx.AsyncClient)
    # httpx offers no public way to wrap an existing client's transports; these two
    # attributes have been stable across httpx releases and are checked in tests.
    client._transport = _wrap(client._transport, inst, is_async)
    client._mounts = {
        pattern: _wrap(transport, inst, is_async) for pattern, transport in client._mounts.items()
    }
    return client


def uninstrument(client: ClientT) -> ClientT:
    """Take off what :func:`instrument` installed (a no-op on a plain client)."""
    client._transport = _unwrap(client._transport)
    client._mounts = {pattern: _unwrap(t) for pattern, t in client._mounts.items()}
    return client
