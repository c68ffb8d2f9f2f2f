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
  body byte, ``ttfb_ms`` to the response headers (to the first body chunk for
  streams), ``request_bytes`` (``Content-Length``), ``response_bytes`` (body bytes sent),
  ``db_ms`` when the request touched an instrumented database, ``run_id`` from a
  valid ``X-Perfnb-Run`` header and ``client``, a salted hash of the session
  cookie (``session_cookie=``) or of the peer address;
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
connection ends: duration, messages and bytes each way (``messages_in``,
``request_bytes``, ``messages_out``, ``response_bytes``) and the close code in
``status``. Lifespan and other scope types pass straight through; the lifespan
shutdown is observed (not changed) to close the monitor.

Requests under the monitor's prefix are perfnb's own endpoints: they are served
by the monitor and recorded with ``source="perfnb"``.

Once a second at most, on the request path, the middleware also records process
samples (:mod:`perfnb.server.sampler`) and a ``kind="overhead"`` record with the
mean µs it added per request. Install it outermost (``PerfnbMiddleware(app)``)
so that error pages written by the framework also carry ``Server-Timing``;
``app.add_middleware(PerfnbMiddleware)`` works too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime, timedelta
from time import perf_counter_ns
from typing import Any, Final

from perfnb.schema import Record, Sink
from perfnb.server.monitor import Monitor
from perfnb.server.recording import FAST_TIMING, METHODS, Exchange, Recorder, timing_value
from perfnb.server.routes import AsgiRouteResolver, StarletteRouteResolver
from perfnb.server.sampler import ProcessSampler
from perfnb.server.spans import _current

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
_SERVER_TIMING: Final = b"server-timing"
_MAX_LENGTH: Final = 2**62
_OWN_ENDPOINTS: Final = frozenset({"stream", "control", "beacon"})
# anchor + _ONE_US * n is the cheapest way to an aware datetime (no keyword parsing).
_ONE_US: Final = timedelta(microseconds=1)
# Records wait at most this many requests (or one event-loop turn) for their batch.
_BATCH: Final = 256
_START: Final = "http.response.start"


class _HttpExchange(Exchange):
    """One HTTP request: its timings, and the wrapped ``send`` that observes the response.

    It is also what waits in the batch until its record is written: the scope
    and the request headers are kept for that.
    """

    send: Send
    scope: Scope
    request_headers: dict[bytes, bytes]
    t0: int = 0
    # Set only on the requests whose own cost is measured (about one in 16).
    t1: int = 0
    source: str = "server"
    error: BaseException | None = None
    beacon: bytes | None = None

    async def observe(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body")
            if body:
                self.chunks += 1
                self.out_bytes += len(body)
            if message.get("more_body"):
                if body and not self.first_ns:
                    self.first_ns = perf_counter_ns()
                await self.send(message)
                return
            await self.send(message)
            self.end_ns = perf_counter_ns()
            return
        mtype = message["type"]
        if mtype == "http.response.start":
            message = self.start(message)
        elif mtype == "http.response.pathsend" or mtype == "http.response.zerocopysend":
            await self.send(message)
            self.end_ns = perf_counter_ns()
            return
        await self.send(message)

    def start(self, message: Message) -> Message:
        """Note the status and add a ``Server-Timing`` header to the response.

        perfnb's value goes in a header line of its own, after any the app wrote:
        a list-valued field may be repeated (RFC 9110, 5.3), and readers join the
        lines, so the app's timings are kept as they were. ``perfnb;dur`` is the
        mean cost perfnb added per request over the last second.
        """
        t = perf_counter_ns()
        self.start_ns = t
        rec = self.rec
        try:
            self.status = message["status"]
            headers = self.headers = message.get("headers", ())
            if self.spans is None and not self.db_count:
                value = FAST_TIMING % ((t - self.t0) / 1e6, rec.own_ms)
            else:
                value = timing_value(t - self.t0, rec.own_ns_mean, self)
            if len(message) == 3 and headers:
                # The usual shape (type, status, headers): a literal is the cheapest copy.
                message = {
                    "type": _START,
                    "status": message["status"],
                    "headers": [*headers, (_SERVER_TIMING, value)],
                }
            else:
                message = {**message, "headers": [*headers, (_SERVER_TIMING, value)]}
        except Exception:
            rec.internal_error()
        if self.t1:
            self.own_ns = perf_counter_ns() - t
        return message


class PerfnbMiddleware:
    """Pure ASGI middleware recording every request into a :class:`Monitor`.

    ``monitor`` is created from ``service``, ``sink``, ``prefix`` (default
    ``/api/performance-metrics``) and ``token`` when not given; pass either a
    monitor or those. ``session_cookie`` names the cookie whose (hashed) value
    keys clients; without it the peer address is hashed. ``stream_routes`` lists
    route templates always recorded as streams (long polls). ``max_routes``
    bounds the number of distinct route names (beyond it: ``<other>``).

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
        self.recorder = Recorder(
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
        self.monitor: Monitor = self.recorder.monitor
        self.resolve: AsgiRouteResolver = route_resolver or StarletteRouteResolver(app)
        self._default_resolver = route_resolver is None
        # id(route object) -> (route object, template); see __call__.
        self._templates: dict[int, tuple[object, str]] = {}
        self._prefix = self.monitor.prefix
        # Finished requests whose records are still to be written (see _flush).
        self._pending: list[_HttpExchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        monitor = self.monitor
        app = self.app
        source = "server"
        path = scope["path"]
        if path.startswith(self._prefix) and monitor.owns(path):
            # perfnb's own endpoints: served by the monitor even while monitoring
            # is off (so it can be turned on again), recorded as perfnb traffic.
            app = monitor.handle_asgi
            source = "perfnb"
        elif not monitor.enabled:
            await app(scope, receive, send)
            return
        rec = self.recorder
        t0 = perf_counter_ns()
        if t0 >= rec.tick_ns:
            rec.tick(t0)
            self._flush()
        ex = _HttpExchange()
        ex.rec = rec
        ex.send = send
        ex.t0 = t0
        ex.scope = scope
        if source != "server":
            ex.source = source
        try:
            headers = ex.request_headers = dict(scope["headers"])
        except (TypeError, ValueError):  # not a list of (bytes, bytes) pairs
            headers = ex.request_headers = {}
        if _BEACON in headers:
            # Browser batches riding on the app's request are perfnb's, not the app's.
            ex.beacon = headers[_BEACON]
            scope = ex.scope = dict(scope)
            scope["headers"] = [h for h in scope["headers"] if h[0] != _BEACON]
        # About one request in 16 (by the clock's low bits) measures perfnb's own
        # cost; the others skip those clock reads.
        measured = not t0 & 15

        token = _current.set(ex)
        if measured:
            ex.t1 = perf_counter_ns()
        try:
            await app(scope, receive, ex.observe)
        except BaseException as exc:
            ex.error = exc
            raise
        finally:
            _current.reset(token)
            if measured:
                t_after = perf_counter_ns()
            if not ex.end_ns:
                ex.end_ns = perf_counter_ns()
            # The record is written in a batch: right after this event-loop turn,
            # or at once when the batch is full.
            pending = self._pending
            pending.append(ex)
            if len(pending) == 1:
                self._schedule_flush()
            elif len(pending) >= _BATCH:
                self._flush()
            if measured:
                rec.own_ns += ex.t1 - t0 + ex.own_ns + perf_counter_ns() - t_after
                rec.own_count += 1

    def _schedule_flush(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._flush)
        except RuntimeError:  # no running loop: an app driven by hand
            self._flush()

    def flush(self) -> None:
        """Write the records of finished requests that still wait in the batch."""
        self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        rec = self.recorder
        started = perf_counter_ns()
        record = self.monitor.record
        build = self._record_of
        for ex in pending:
            try:
                record(build(ex))
            except Exception:
                rec.internal_error()
        rec.batch_ns += perf_counter_ns() - started
        rec.batch_count += len(pending)

    def _record_of(self, ex: _HttpExchange) -> Record:
        rec = self.recorder
        scope = ex.scope
        headers = ex.request_headers
        t0 = ex.t0
        if ex.source != "server":
            route = self._own_route(scope["path"])
        elif self._default_resolver:
            # Starlette/FastAPI without mounts: the route object's template,
            # cached by the object (checked by identity, not equality).
            found = scope.get("route")
            cached = self._templates.get(id(found))
            if cached is not None and cached[0] is found and "app_root_path" not in scope:
                route = cached[1]
            else:
                route = self._slow_route(scope, found)
        else:
            route = rec.route(self.resolve(scope))
        end = ex.end_ns
        method = scope.get("method", "GET")
        raw = headers.get(_LENGTH)
        peer = scope.get("client")
        address = str(peer[0]) if peer else ""
        if rec.session_cookie is not None:
            cookie = headers.get(_COOKIE)
            client = rec.client((cookie is not None and rec.session(cookie)) or address)
        else:
            client = rec.clients.get(address) or rec.client(address)
        record: Record = {
            "time": rec.anchor_time + _ONE_US * ((t0 - rec.anchor_ns) // 1000),
            "source": ex.source,
            "kind": "http",
            "service": rec.service,
            "route": route,
            "method": method if method in METHODS else "OTHER",
            "status": ex.status or 500,
            "duration_ms": (end - t0) / 1e6,
            "ttfb_ms": ((ex.start_ns or end) - t0) / 1e6,
            "request_bytes": min(int(raw), _MAX_LENGTH) if raw and raw.isdigit() else 0,
            "response_bytes": ex.out_bytes,
            "client": client,
        }
        # first_ns is set once a non-empty chunk went out with more to come.
        if (ex.first_ns and (ex.chunks > 1 or ex.is_event_stream())) or (
            rec.stream_routes and route in rec.stream_routes
        ):
            record["kind"] = "stream"
            record["ttfb_ms"] = ((ex.first_ns or ex.start_ns or end) - t0) / 1e6
            record["messages_out"] = ex.chunks
        if ex.db_count:
            record["db_ms"] = ex.db_ns / 1e6
        raw_run = headers.get(_RUN)
        run_id = None if raw_run is None else rec.run_id(raw_run)
        if run_id is not None:
            record["run_id"] = run_id
        error = ex.error
        if error is not None:
            record["error_type"] = type(error).__name__[:128]
        elif not ex.status:
            record["error_type"] = "NoResponse"
        beacon = ex.beacon
        if beacon is not None:
            self.monitor.take_beacon_header(
                beacon, route=route, client=address or None, run_id=run_id
            )
        return record

    def _slow_route(self, scope: Scope, found: object) -> str:
        route = self.recorder.route(self.resolve(scope))
        if found is not None and "app_root_path" not in scope and "perfnb.route" not in scope:
            if len(self._templates) >= 4096:
                self._templates.clear()
            self._templates[id(found)] = (found, route)
        return route

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _own_route(self, path: str) -> str:
        # Scanners may probe anything under the prefix: keep the names bounded.
        sub = path[len(self._prefix) :].strip("/")
        return self._prefix + "/" + sub if sub in _OWN_ENDPOINTS else self._prefix

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = self.monitor
        if not monitor.wants("websocket"):
            await self.app(scope, receive, send)
            return
        rec = self.recorder
        t0 = perf_counter_ns()
        if t0 >= rec.tick_ns:
            rec.tick(t0)
        now = datetime.now(UTC)
        # in messages, in bytes, out messages, out bytes, close code
        counts = [0, 0, 0, 0, 0]

        async def inbound() -> Message:
            message = await receive()
            mtype = message.get("type")
            if mtype == "websocket.receive":
                counts[0] += 1
                counts[1] += _ws_size(message)
            elif mtype == "websocket.disconnect" and not counts[4]:
                counts[4] = _close_code(message.get("code"), 1005)
            return message

        async def outbound(message: Message) -> None:
            mtype = message.get("type")
            if mtype == "websocket.send":
                counts[2] += 1
                counts[3] += _ws_size(message)
            elif mtype == "websocket.close" and not counts[4]:
                counts[4] = _close_code(message.get("code"), 1000)
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, inbound, outbound)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                peer = scope.get("client")
                record: Record = {
                    "time": now,
                    "source": "server",
                    "kind": "websocket",
                    "service": rec.service,
                    "route": rec.route(self.resolve(scope)),
                    "method": "WS",
                    "status": counts[4],
                    "duration_ms": (perf_counter_ns() - t0) / 1e6,
                    "messages_in": min(counts[0], 2**31 - 1),
                    "request_bytes": counts[1],
                    "messages_out": min(counts[2], 2**31 - 1),
                    "response_bytes": counts[3],
                    "client": rec.client(str(peer[0]) if peer else ""),
                }
                if error is not None:
                    record["error_type"] = type(error).__name__[:128]
                monitor.record(record)
            except Exception:
                rec.internal_error()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = self.monitor

        async def observe(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The app has run its shutdown: write what waits in the batch and
                # close the monitor (ends feed streams, writes the spool).
                try:
                    self._flush()
                    monitor.close()
                except Exception:
                    self.recorder.internal_error()
            await send(message)

        await self.app(scope, receive, observe)


def _ws_size(message: Message) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text = message.get("text")
    return len(text.encode("utf-8", "replace")) if isinstance(text, str) else 0


def _close_code(code: object, default: int) -> int:
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 32767:
        return code
    return default
