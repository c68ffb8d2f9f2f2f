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

The sink receives each record as a plain dict, built when the response ends.
With ``lazy=True`` it receives a :class:`~perfnb.collect.clientrecord.ClientRecord`
instead: a read-only mapping of the same columns whose fields are worked out
when it is first read, so the request only pays for noting what it saw. That
suits sinks that keep many records and read few (a ring, a sampler); a sink
that reads every record (``Stream.push``, a store) pays the building then, and
a little more than for a dict (see :mod:`perfnb.collect.clientrecord`).

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
from collections.abc import Callable
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
        #: Whether the sink gets ClientRecords (built when read) rather than dicts.
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
        # The sink gets ClientRecords: Mappings of the record's columns, not dicts.
        # The schema's checks, streams and stores take them (see clientrecord).
        self.sink_any: Callable[[ClientRecord], None] = cast("Callable[[ClientRecord], None]", sink)

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

    def __init__(self, inner: httpx.SyncByteStream, record: ClientRecord) -> None:
        self.inner = inner
        self.record = record

    def __iter__(self) -> Any:
        record = self.record
        try:
            for chunk in self.inner:
                record.size += len(chunk)
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early; close() ends the record
        except BaseException as exc:
            record.fail(exc)
            record.end()
            raise
        record.end()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.record.end()


class _AsyncBody(httpx.AsyncByteStream):
    """:class:`_SyncBody` for async clients.

    An iterator class rather than an async generator: asyncio registers every
    async generator it starts (for shutdown), which would cost more per request
    than counting the chunks.
    """

    def __init__(self, inner: httpx.AsyncByteStream, record: ClientRecord) -> None:
        self.inner = inner
        self.record = record
        self._chunks: Any = None

    def __aiter__(self) -> _AsyncBody:
        self._chunks = self.inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk: bytes = await self._chunks.__anext__()
        except StopAsyncIteration:
            self.record.end()
            raise
        except BaseException as exc:
            self.record.fail(exc)
            self.record.end()
            raise
        self.record.size += len(chunk)
        return chunk

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.record.end()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, inst: Instrumentation) -> None:
        self.inner = inner
        self.inst = inst

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        inst = self.inst
        start = perf_counter_ns()
        if start >= inst.anchor_until:
            inst.new_anchor()
        record = ClientRecord(inst, request, start)
        try:
            response = self.inner.handle_request(request)
            # ClientRecord.response, written out: this runs on every request.
            record._ttfb = perf_counter_ns()
            record._status = response.status_code
            record._resp = response.headers
        except BaseException as exc:
            record.fail(exc)
            record.end()
            raise
        if response.is_stream_consumed:
            # Built with its body already read (MockTransport, ASGI/WSGI transports):
            # the body is all there, nothing more will be read from the stream.
            record.size = len(response.content)
            record.end()
            return response
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        response.stream = _SyncBody(stream, record)
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
        record = ClientRecord(inst, request, start)
        try:
            response = await self.inner.handle_async_request(request)
            # ClientRecord.response, written out: this runs on every request.
            record._ttfb = perf_counter_ns()
            record._status = response.status_code
            record._resp = response.headers
        except BaseException as exc:
            record.fail(exc)
            record.end()
            raise
        if response.is_stream_consumed:
            record.size = len(response.content)
            record.end()
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _AsyncBody(stream, record)
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
    mounts or proxies. :func:`uninstrument` takes it off again. ``lazy=True``
    hands the sink :class:`~perfnb.collect.clientrecord.ClientRecord` mappings,
    built when first read, instead of dicts (see the module's notes).

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
