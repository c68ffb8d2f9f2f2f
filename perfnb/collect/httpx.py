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
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import httpx

# _SIMPLE is the parser's pattern for the usual header shape: the client reads the
# durations it needs straight from its groups (see _split_header).
from perfnb.collect.servertiming import _SIMPLE, ServerTimingMetric, parse_server_timing
from perfnb.errors import ConfigError
from perfnb.schema import MAX_STRING, Record, Sink

__all__ = [
    "Instrumentation",
    "default_route",
    "instrument",
    "instrumentation",
    "split_server_time",
    "uninstrument",
]

_log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)

#: Longest route kept; longer paths are cut (they are almost always junk or scans).
MAX_ROUTE: Final = 256
#: Longest error message kept.
MAX_ERROR_MESSAGE: Final = 300
#: Routes remembered per instrumented client, so a path is mapped once.
_ROUTE_CACHE_SIZE: Final = 2048

# A path segment that names one thing rather than a kind of thing: a UUID, a long
# hex or base64-ish token with digits in it.
_ID_SEGMENT: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}"
    r"|(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}"
)

_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

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
    >>> split_server_time(parse_server_timing("db;dur=2, app;dur=5"), 9.0)
    (5.0, 5.0, 2.0)
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
    for index in range(0, len(groups), 4):
        name = groups[index]
        if name is None:
            break
        dur = float(groups[index + 1])
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
        if dur > largest:
            largest = dur
    server = total if total is not None else app if app is not None else largest or None
    if server is not None and server > duration_ms:
        server = duration_ms
    return server, app, db


def _error_type(exc: BaseException) -> str:
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


def _scrub(message: str, request: httpx.Request) -> str:
    """The message with the request's secrets replaced: header values, URL extras."""
    url = request.url
    secrets = [str(url)]
    if url.query:
        secrets.append(url.query.decode("ascii", "replace"))
    if url.userinfo:
        secrets.append(url.userinfo.decode("ascii", "replace"))
    if url.password:
        secrets.append(url.password)
    for name, value in request.headers.multi_items():
        if name.lower() in SECRET_HEADERS and len(value) >= 4:
            secrets.append(value)
            secrets.extend(part for part in value.split() if len(part) >= 4)
    safe_url = f"{url.scheme}://{url.host}{'' if url.port is None else f':{url.port}'}{url.path}"
    for secret in sorted(set(secrets), key=len, reverse=True):
        message = message.replace(secret, safe_url if secret == str(url) else "[redacted]")
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return message


class Instrumentation:
    """What :func:`instrument` installed on one client: its settings and counters.

    ``records`` counts records handed to the sink, ``sink_errors`` those the sink
    refused by raising.
    """

    def __init__(self, *, sink: Sink, service: str | None, route: Callable[[str], str]) -> None:
        self.sink = sink
        self.service = service
        self.route = route
        self.records = 0
        self.sink_errors = 0
        self._routes: dict[str, str] = {}
        self._services: dict[bytes | None, str] = {}

    def _route_of(self, url: httpx.URL, key: str) -> str:
        # Keyed by the path as sent (see _path_key); the route function sees it decoded.
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

    def _service_of(self, host: bytes | None, url: httpx.URL) -> str:
        # The Host header httpx sends is host[:port] as the URL gives it, already
        # bytes: one cached decode instead of two URL property lookups.
        if host is None:
            return url.host if url.port is None else f"{url.host}:{url.port}"
        service = self._services.get(host)
        if service is None:
            service = host[:MAX_ROUTE].decode("latin-1")
            if len(self._services) >= _ROUTE_CACHE_SIZE:
                self._services.clear()
            self._services[host] = service
        return service


def _header_items(headers: httpx.Headers) -> list[tuple[bytes, bytes, bytes]]:
    """(raw name, lower-case name, value) triples without decoding anything.

    ``Headers._list`` holds exactly that; reading it directly costs a fraction of
    ``get``/``get_list``, which decode every header. The public fallback keeps this
    working should httpx rename the attribute.
    """
    items = getattr(headers, "_list", None)
    if isinstance(items, list):
        return items
    return [(key, key.lower(), value) for key, value in headers.raw]


def _path_key(url: httpx.URL) -> str:
    """The URL's path as sent (percent-encoded), to key the route cache.

    ``URL.path`` unquotes on every access, which is most of a cache hit's cost;
    the public property is the fallback should httpx rename its attribute.
    """
    path = getattr(getattr(url, "_uri_reference", None), "path", None)
    return path if isinstance(path, str) else url.path


class _Exchange:
    """One request/response on the wire, from hand-over to the last body byte.

    The request path does the least it can (two clock reads, a scan of the
    response headers); the record is built once, at the end. The same object is
    the response body seen by httpx (see the subclasses below), which saves an
    allocation per request.
    """

    # Class-level defaults: __init__ sets only what differs per request.
    status = 0
    ttfb_ns = -1
    # The Server-Timing value (nearly always one), or a list when there are several.
    timing: bytes | list[bytes] | None = None
    kind = "http"
    size = 0
    done = False

    def __init__(self, inst: Instrumentation, request: httpx.Request) -> None:
        self.inst = inst
        self.request = request
        self.start_wall = time.time()
        self.start = time.perf_counter_ns()

    def headers(self, response: httpx.Response) -> None:
        self.ttfb_ns = time.perf_counter_ns() - self.start
        self.status = response.status_code
        for _, key, value in _header_items(response.headers):
            if key == b"server-timing":
                timing = self.timing
                if timing is None:
                    self.timing = value
                elif isinstance(timing, bytes):
                    self.timing = [timing, value]
                else:
                    timing.append(value)
            elif key == b"content-type" and value.startswith(b"text/event-stream"):
                self.kind = "stream"

    def finish(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        duration = (time.perf_counter_ns() - self.start) / 1e6
        inst = self.inst
        try:
            record = self._record(duration, exc)
        except Exception:  # pragma: no cover - a bug here must not break the request
            _log.exception("perfnb could not build a client record")
            return
        try:
            inst.sink(record)
        except Exception:
            inst.sink_errors += 1
            if inst.sink_errors == 1:
                _log.exception("perfnb sink %r refused a client record", inst.sink)
        else:
            inst.records += 1

    def _record(self, duration: float, exc: BaseException | None) -> Record:
        inst = self.inst
        request = self.request
        method = request.method
        url = request.url
        host = length = run_id = None
        for _, key, value in _header_items(request.headers):
            if key == b"host":
                host = value
            elif key == b"content-length":
                length = value
            elif key == b"x-perfnb-run":
                run_id = value
        path = _path_key(url)
        record: Record = {
            "time": datetime.fromtimestamp(self.start_wall, UTC),
            "source": "client",
            "kind": self.kind,
            "service": inst.service or inst._services.get(host) or inst._service_of(host, url),
            "route": inst._routes.get(path) or inst._route_of(url, path),
            "method": method,
            "status": self.status,
            "duration_ms": duration,
        }
        ttfb = self.ttfb_ns
        if ttfb >= 0:
            record["ttfb_ms"] = ttfb / 1e6
            record["response_bytes"] = self.size
        if length is not None and length.isdigit():
            record["request_bytes"] = int(length)
        elif method in _BODYLESS:
            record["request_bytes"] = 0
        if run_id:
            record["run_id"] = run_id[:MAX_STRING].decode("latin-1")
        timing = self.timing
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
        if exc is not None:
            record["error_type"] = _error_type(exc)
            record["error_message"] = _scrub(f"{type(exc).__name__}: {exc}", request)
        return record


class _SyncBody(_Exchange, httpx.SyncByteStream):
    inner: httpx.SyncByteStream

    def __iter__(self) -> Any:
        try:
            for chunk in self.inner:
                self.size += len(chunk)
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early; close() ends the exchange
        except BaseException as exc:
            self.finish(exc)
            raise
        self.finish()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.finish()


class _AsyncBody(_Exchange, httpx.AsyncByteStream):
    inner: httpx.AsyncByteStream

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self.inner:
                self.size += len(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.finish(exc)
            raise
        self.finish()

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.finish()


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, inst: Instrumentation) -> None:
        self.inner = inner
        self.inst = inst

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _SyncBody(self.inst, request)
        try:
            response = self.inner.handle_request(request)
            exchange.headers(response)
        except BaseException as exc:
            exchange.finish(exc)
            raise
        if response.is_stream_consumed:
            # Built with its body already read (MockTransport, ASGI/WSGI transports):
            # the body is all there, nothing more will be read from the stream.
            exchange.size = len(response.content)
            exchange.finish()
            return response
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        exchange.inner = stream
        response.stream = exchange
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
        exchange = _AsyncBody(self.inst, request)
        try:
            response = await self.inner.handle_async_request(request)
            exchange.headers(response)
        except BaseException as exc:
            exchange.finish(exc)
            raise
        if response.is_stream_consumed:
            # Built with its body already read (MockTransport, ASGI/WSGI transports):
            # the body is all there, nothing more will be read from the stream.
            exchange.size = len(response.content)
            exchange.finish()
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        exchange.inner = stream
        response.stream = exchange
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
) -> ClientT:
    """Record every request ``client`` makes into ``sink``; returns the client.

    ``service`` names the service called (default: the URL's ``host[:port]``);
    ``route`` maps a URL path to the route recorded (default
    :func:`default_route`; give your own to map paths to your API's templates).
    Works on ``httpx.Client`` and ``httpx.AsyncClient``, including clients with
    mounts or proxies. :func:`uninstrument` takes it off again.

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
    if instrumentation(client) is not None:
        raise ConfigError(
            f"client {client!r} is already instrumented: call uninstrument(client) first"
        )
    inst = Instrumentation(sink=sink, service=service, route=route)
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
