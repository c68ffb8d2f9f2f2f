"""The pure ASGI middleware: one record per request, ``Server-Timing`` on every response.

>>> from starlette.applications import Starlette
>>> app = PerfnbMiddleware(Starlette(), service="shop")
>>> app.monitor.prefix
'/api/performance-metrics'

What it does per HTTP request (the response is observed by wrapping ``send``;
the app sees the same scope, receive and messages as without it, apart from the
``X-Perfnb-Beacon`` request header, which is taken out):

- the route *template*, asked of the framework after routing (see
  :mod:`perfnb.server.routes`; ``route_resolver=`` plugs in another); requests no
  route matched are recorded under ``<unmatched>``;
- method (unknown methods as ``OTHER``), status, ``duration_ms`` to the last
  body byte (when the app hands it to the server, so background tasks that run
  after the response are not counted), ``ttfb_ms`` to the response headers (to
  the first body chunk for streams), ``request_bytes`` (``Content-Length``),
  ``response_bytes`` (body bytes sent), ``db_ms`` when the request touched an
  instrumented database, ``run_id`` from a valid ``X-Perfnb-Run`` header and
  ``client``, a salted hash of the session cookie (``session_cookie=``) or of
  the peer address;
- when the app raises: ``error_type`` (the exception class) and status 500 if no
  response had started; the exception is re-raised unchanged;
- ``Server-Timing: app;dur=…, db;dur=…, <spans>, perfnb;dur=…`` added to the
  response headers, after the app's own ``Server-Timing`` value when it set one.

**Streams.** A response is recorded as ``kind="stream"`` when its Content-Type
is ``text/event-stream``, when its route is listed in ``stream_routes`` (long
polls), or when its body went out in more than one non-empty chunk (streamed
bodies, file downloads). A single-chunk body is the shape of a computed
response, whose duration is the server's latency; a body sent piece by piece is
paced by its producer or its reader, so its duration says nothing about latency
and must not enter latency percentiles. Streams carry ``ttfb_ms`` (first
chunk), ``duration_ms`` (whole stream), ``response_bytes`` and ``messages_out``
(chunks or events).

**WebSockets** are recorded as ``kind="websocket"``, method ``WS``, when the
connection ends (:mod:`perfnb.server.websocket`): duration, messages and bytes
each way (``messages_in``, ``request_bytes``, ``messages_out``,
``response_bytes``) and the close code in ``status``. Lifespan and other
scope types pass straight through; the lifespan shutdown is observed (not
changed) to close the monitor.

Requests under the monitor's prefix are perfnb's own endpoints: they are served
by the monitor and recorded with ``source="perfnb"``.

Once a second at most, on the request path, the middleware also records process
samples (:mod:`perfnb.server.sampler`) and a ``kind="overhead"`` record with the
mean µs it added per request (measured on every 16th request). A request leaves
a compact entry in the monitor's ring; its record dict is built when something
first reads it (see :meth:`Monitor.take <perfnb.server.monitor.Monitor.take>`),
or at once when the monitor has a sink. Install it outermost (``PerfnbMiddleware(app)``)
so that error pages written by the framework also carry ``Server-Timing``;
``app.add_middleware(PerfnbMiddleware)`` works too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from time import perf_counter_ns
from typing import Any, Final

from perfnb.schema import Record, Sink
from perfnb.server.exchange import HttpExchange, exchange_class
from perfnb.server.monitor import Monitor
from perfnb.server.recording import METHODS, Recorder
from perfnb.server.routes import AsgiRouteResolver, StarletteRouteResolver
from perfnb.server.sampler import ProcessSampler
from perfnb.server.spans import _current
from perfnb.server.websocket import serve_websocket

__all__ = ["PerfnbMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BEACON: Final = b"x-perfnb-beacon"
_RUN: Final = b"x-perfnb-run"
_LENGTH: Final = b"content-length"
_COOKIE: Final = b"cookie"
_MAX_LENGTH: Final = 2**62
_OWN_ENDPOINTS: Final = frozenset({"stream", "control", "beacon"})
# anchor + _ONE_US * n is the cheapest way to an aware datetime (no keyword parsing).
_ONE_US: Final = timedelta(microseconds=1)

# What the middleware keeps of a request, in the ring, until something reads it
# (see Monitor.take): a tuple costs one allocation where the record dict would
# cost a dozen computed fields. Positions:
#   0 builder key (Monitor.add_builder; one for the app's requests, one for
#     perfnb's endpoints)   1 clock anchor (perf ns, datetime)   2 t0
#   3 response start ns   4 end ns   5 route   6 method   7 status
#   8 bytes of the last body message   9 raw Content-Length   10 peer (host, port)
#   11 extra: None, or the fields of the rare cases (streams, DB time, run id,
#      errors, session keys, earlier body chunks), computed while the request's
#      objects are at hand
Entry = tuple[Any, ...]


class PerfnbMiddleware:
    """Pure ASGI middleware recording every request into a :class:`Monitor`.

    ``monitor`` is created from ``service``, ``sink``, ``prefix`` (default
    ``/api/performance-metrics``) and ``token`` when not given; pass either a
    monitor or those. ``session_cookie`` names the cookie whose (hashed) value
    keys clients; without it the peer address is hashed. ``stream_routes`` lists
    route templates always recorded as streams (long polls). ``max_routes``
    bounds the number of distinct route names (beyond it: ``<other>``).

    Each request leaves a compact entry in the monitor's ring; its record dict
    is built when the feed, the snapshot or the spool first reads it, or at
    once when the monitor has a sink (which takes dicts).

    >>> from starlette.applications import Starlette
    >>> records = []
    >>> app = PerfnbMiddleware(Starlette(), service="shop", sink=records.append)
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str | None = None,
        monitor: Monitor | None = None,
        sink: Sink | None = None,
        prefix: str | None = None,
        token: str | None = None,
        session_cookie: str | None = None,
        stream_routes: Iterable[str] = (),
        route_resolver: AsgiRouteResolver | None = None,
        max_routes: int = 1000,
        sampler: ProcessSampler | None = None,
    ) -> None:
        self.app = app
        recorder = self.recorder = Recorder(
            service=service,
            monitor=monitor,
            sink=sink,
            prefix=prefix,
            token=token,
            session_cookie=session_cookie,
            stream_routes=stream_routes,
            max_routes=max_routes,
            sampler=sampler,
        )
        self.monitor: Monitor = recorder.monitor
        self.resolve: AsgiRouteResolver = route_resolver or StarletteRouteResolver(app)
        # id(route object) -> template, for the default resolver. The objects
        # are kept alive beside it, so an id in the cache cannot be reused by
        # another object: finding the id is finding the object.
        self._templates: dict[int, str] = {}
        self._template_objects: list[object] = []
        self._default_resolver = route_resolver is None
        self._prefix = self.monitor.prefix
        self._key = self.monitor.add_builder(self._record_of)
        self._own_key = self.monitor.add_builder(self._own_record_of)
        self._flushed = 0
        # Under these options every record needs _extra.
        self._special = bool(recorder.stream_routes) or recorder.session_cookie is not None

        self._exchange = exchange_class(recorder)
        self._timing_values = recorder.timing_values

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app's HTTP requests while monitoring is on take the path below,
        # written out in full: a helper call per request costs as much as
        # several of the steps it would hold. Everything else goes to _other.
        if (
            scope["type"] != "http"
            or scope["path"].startswith(self._prefix)
            or not self.monitor._enabled
        ):
            await self._other(scope, receive, send)
            return
        rec = self.recorder
        t0 = perf_counter_ns()
        if t0 >= rec.tick_ns:
            rec.tick(t0)
        rec.seen = seen = rec.seen + 1
        ex = self._exchange()
        ex.send = send
        ex.t0 = t0
        # Read on every request, so set on the instance: reading a class-level
        # default takes the slow, unspecialised attribute path. Spans, DB time,
        # errors, streams and beacons set ``rare`` too.
        ex.rare = self._special
        ex.timing_values = self._timing_values
        try:
            headers = dict(scope["headers"])
        except (TypeError, ValueError):  # not a list of (bytes, bytes) pairs
            headers = {}
        if _BEACON in headers:
            scope = self._strip_beacon(ex, scope, headers)
        token = _current.set(ex)
        # Every 16th request measures perfnb's own cost; the others skip those
        # clock reads.
        measured = not seen & 15
        if measured:
            observe = ex.observe_timed
            t1 = perf_counter_ns()
        else:
            observe = ex.observe
        try:
            await self.app(scope, receive, observe)
        except BaseException as exc:
            ex.error = exc
            ex.rare = True
            raise
        finally:
            _current.reset(token)
            if measured:
                t_after = perf_counter_ns()
            try:
                # Starlette/FastAPI without mounts: the route object's template,
                # cached by the object (found by identity, not equality).
                found = scope.get("route")
                route = self._templates.get(id(found))
                if route is None or "app_root_path" in scope:
                    route = self._slow_route(scope, found)
                end = ex.end_ns or perf_counter_ns()
                extra = None
                if ex.rare or _RUN in headers:
                    extra = self._extra(ex, scope, headers, route, end)
                entry = (
                    self._key,
                    rec.anchor,
                    t0,
                    ex.start_ns,
                    end,
                    route,
                    scope["method"],
                    ex.status,
                    ex.tail,
                    headers.get(_LENGTH),
                    scope.get("client"),
                    extra,
                )
                put = self.monitor.fast_put
                if put is not None:
                    put(entry)
                else:
                    self.monitor.take(entry, "http" if extra is None else extra.get("kind", "http"))
            except Exception:
                rec.internal_error()
            if measured:
                rec.own_ns += t1 - t0 + ex.own_ns + perf_counter_ns() - t_after
                rec.own_count += 1

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            monitor = self.monitor
            if monitor.owns(scope["path"]):
                await self._slow_http(scope, receive, send, own=True)
            elif monitor._enabled:
                # Under the prefix's name but not one of perfnb's endpoints.
                await self._slow_http(scope, receive, send, own=False)
            else:
                await self.app(scope, receive, send)
        elif kind == "websocket":
            await serve_websocket(
                self.app, scope, receive, send, rec=self.recorder, resolve=self.resolve
            )
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _slow_http(self, scope: Scope, receive: Receive, send: Send, *, own: bool) -> None:
        """HTTP requests off the common path: perfnb's own endpoints (``own``),
        served by the monitor even while monitoring is off (so it can be turned
        on again) and recorded as perfnb traffic; and app paths that only start
        like the prefix. Their own cost is not measured."""
        rec = self.recorder
        t0 = perf_counter_ns()
        if t0 >= rec.tick_ns:
            rec.tick(t0)
        rec.seen += 1
        ex = self._exchange()
        ex.send = send
        ex.t0 = t0
        ex.rare = self._special
        try:
            headers = dict(scope["headers"])
        except (TypeError, ValueError):
            headers = {}
        if _BEACON in headers:
            scope = self._strip_beacon(ex, scope, headers)
        token = _current.set(ex)
        try:
            app = self.monitor.handle_asgi if own else self.app
            await app(scope, receive, ex.observe)
        except BaseException as exc:
            ex.error = exc
            ex.rare = True
            raise
        finally:
            _current.reset(token)
            try:
                if own:
                    route = self._own_route(scope["path"])
                else:
                    found = scope.get("route")
                    cached = self._templates.get(id(found))
                    if cached is None or "app_root_path" in scope:
                        cached = self._slow_route(scope, found)
                    route = cached
                end = ex.end_ns or perf_counter_ns()
                extra = None
                if ex.rare or _RUN in headers:
                    extra = self._extra(ex, scope, headers, route, end)
                entry = (
                    self._own_key if own else self._key,
                    rec.anchor,
                    t0,
                    ex.start_ns,
                    end,
                    route,
                    scope["method"],
                    ex.status,
                    ex.tail,
                    headers.get(_LENGTH),
                    scope.get("client"),
                    extra,
                )
                self.monitor.take(entry, "http" if extra is None else extra.get("kind", "http"))
            except Exception:
                rec.internal_error()

    def _strip_beacon(
        self, ex: HttpExchange, scope: Scope, headers: Mapping[bytes, bytes]
    ) -> Scope:
        # Browser batches riding on the app's request are perfnb's, not the app's.
        ex.beacon = headers[_BEACON]
        ex.rare = True
        scope = dict(scope)
        scope["headers"] = [h for h in scope["headers"] if h[0] != _BEACON]
        return scope

    def _extra(
        self,
        ex: HttpExchange,
        scope: Scope,
        headers: Mapping[bytes, bytes],
        route: str,
        end: int,
    ) -> dict[str, Any] | None:
        """The record's fields beyond the common case (and the beacon, taken now)."""
        rec = self.recorder
        extra: dict[str, Any] = {}
        chunks = ex.chunks + (1 if ex.tail else 0)
        # first_ns is set once a non-empty chunk went out with more to come.
        if (ex.first_ns and (chunks > 1 or ex.is_event_stream())) or (
            rec.stream_routes and route in rec.stream_routes
        ):
            extra["kind"] = "stream"
            extra["ttfb_ms"] = ((ex.first_ns or ex.start_ns or end) - ex.t0) / 1e6
            extra["messages_out"] = chunks
        if ex.out_bytes:  # body chunks sent before the last
            extra["response_bytes"] = ex.out_bytes + ex.tail
        if rec.session_cookie is not None:
            cookie = headers.get(_COOKIE)
            session = rec.session(cookie) if cookie is not None else None
            if session:
                extra["client"] = rec.client(session)
        if ex.db_count:
            extra["db_ms"] = ex.db_ns / 1e6
        raw_run = headers.get(_RUN)
        run_id = None if raw_run is None else rec.run_id(raw_run)
        if run_id is not None:
            extra["run_id"] = run_id
        error = ex.error
        if error is not None:
            extra["error_type"] = type(error).__name__[:128]
        beacon = ex.beacon
        if beacon is not None:
            peer = scope.get("client")
            self.monitor.take_beacon_header(
                beacon, route=route, client=(str(peer[0]) if peer else "") or None, run_id=run_id
            )
        return extra or None

    def _own_record_of(self, entry: Entry) -> Record:
        return self._record_of(entry, own=True)

    def _record_of(self, entry: Entry, *, own: bool = False) -> Record:
        """Build the record of an entry (when it is first read)."""
        (_, anchor, t0, start, end, route, method, status, out, length, peer, extra) = entry
        rec = self.recorder
        try:
            address = str(peer[0]) if peer else ""
            record: Record = {
                "time": anchor[1] + _ONE_US * ((t0 - anchor[0]) // 1000),
                "source": "perfnb" if own else "server",
                "kind": "http",
                "service": rec.service,
                "route": route,
                "method": method if method in METHODS else "OTHER",
                "status": status or 500,
                "duration_ms": (end - t0) / 1e6,
                "ttfb_ms": ((start or end) - t0) / 1e6,
                "request_bytes": (
                    min(int(length), _MAX_LENGTH) if length and length.isdigit() else 0
                ),
                "response_bytes": out,
                "client": rec.clients.get(address) or rec.client(address),
            }
            if extra is not None:
                record.update(extra)
            if not status and "error_type" not in record:
                record["error_type"] = "NoResponse"
        except Exception:
            rec.internal_error()
            record = {
                "time": datetime.now(UTC),
                "source": "perfnb" if own else "server",
                "kind": "http",
                "service": rec.service,
                "route": route if isinstance(route, str) else "<unmatched>",
                "error_type": "PerfnbInternalError",
            }
        return record

    def flush(self) -> None:
        """Build the records of finished requests still held in compact form.

        Never needed for correctness (readers build what they read); tests use
        it to have every record built and checked at a known point.
        """
        buffer = self.monitor.buffer
        read = buffer.read(after=self._flushed, limit=buffer.capacity)
        self._flushed = max(self._flushed, read.last)

    def _slow_route(self, scope: Scope, found: object) -> str:
        route = self.recorder.route(self.resolve(scope))
        if (
            self._default_resolver
            and found is not None
            and "app_root_path" not in scope
            and "perfnb.route" not in scope
        ):
            if len(self._templates) >= 4096:
                self._templates.clear()
                self._template_objects.clear()
            self._templates[id(found)] = route
            self._template_objects.append(found)
        return route

    def _own_route(self, path: str) -> str:
        # Scanners may probe anything under the prefix: keep the names bounded.
        sub = path[len(self._prefix) :].strip("/")
        return self._prefix + "/" + sub if sub in _OWN_ENDPOINTS else self._prefix

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = self.monitor

        async def observe(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The app has run its shutdown: write what waits in the batch and
                # close the monitor (ends feed streams, writes the spool).
                try:
                    monitor.close()
                except Exception:
                    self.recorder.internal_error()
            await send(message)

        await self.app(scope, receive, observe)
