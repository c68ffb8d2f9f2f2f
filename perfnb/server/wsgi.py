"""The WSGI middleware (Flask, Django, any WSGI app): the same records as the ASGI one.

>>> from flask import Flask
>>> flask_app = Flask("shop")
>>> flask_app.wsgi_app = PerfnbWSGIMiddleware(flask_app.wsgi_app, service="shop")

Per request it records what :class:`~perfnb.server.asgi.PerfnbMiddleware` does
(route template, method, status, duration to the last body byte, ``ttfb_ms`` to
``start_response``, sizes, errors, run id, hashed client) and adds
``Server-Timing`` in ``start_response``. The response body is passed through a
thin iterator that counts chunks and bytes and notes when the last one left;
the record is written when the server closes the body, as WSGI requires it to.
A body of several non-empty chunks is a stream (see the ASGI module for the
rule). The route template comes from Flask's ``request.url_rule`` by default:
wrapping a Flask app's ``wsgi_app`` installs a small ``before_request`` hook
that hands the rule over (:func:`~perfnb.server.routes.install_flask_hook`).
``route_resolver=`` plugs in another resolver;
:class:`~perfnb.server.routes.DjangoRouteMiddleware` serves Django.

Wrap the WSGI callable (``flask_app.wsgi_app``), not the Flask object, so that
Flask's own attributes stay reachable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextvars import Token
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any, Final

from perfnb.schema import Record, Sink
from perfnb.server.monitor import Monitor
from perfnb.server.recording import METHODS, Exchange, Recorder, timing_value
from perfnb.server.routes import WsgiRouteResolver, flask_route, install_flask_hook
from perfnb.server.sampler import ProcessSampler
from perfnb.server.spans import RequestTimings, _current

__all__ = ["PerfnbWSGIMiddleware"]

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_OWN_ENDPOINTS: Final = frozenset({"stream", "control", "beacon"})
_MAX_LENGTH: Final = 2**62


class _Call:
    """One request's facts known before the app ran (kept for the record)."""

    __slots__ = (
        "address",
        "beacon",
        "client",
        "environ",
        "ex",
        "method",
        "now",
        "request_bytes",
        "run_id",
        "source",
        "t0",
        "t1",
        "token",
    )

    address: str
    beacon: str | None
    client: str
    environ: Environ
    ex: Exchange
    method: str
    now: datetime
    request_bytes: int
    run_id: str | None
    source: str
    t0: int
    t1: int
    token: Token[RequestTimings | None] | None


class PerfnbWSGIMiddleware:
    """WSGI middleware recording every request into a :class:`Monitor`.

    Options as for :class:`~perfnb.server.asgi.PerfnbMiddleware`.

    >>> def hello(environ, start_response):
    ...     start_response("200 OK", [("Content-Type", "text/plain")])
    ...     return [b"hi"]
    >>> app = PerfnbWSGIMiddleware(hello, service="hello")
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        service: str | None = None,
        monitor: Monitor | None = None,
        sink: Sink | None = None,
        prefix: str | None = None,
        token: str | None = None,
        session_cookie: str | None = None,
        stream_routes: Iterable[str] = (),
        route_resolver: WsgiRouteResolver | None = None,
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
        self.resolve: WsgiRouteResolver = route_resolver or flask_route
        if route_resolver is None:
            install_flask_hook(app)
        self._prefix = self.monitor.prefix

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        monitor = self.monitor
        app: Callable[..., Iterable[bytes]] = self.app
        source = "server"
        path = environ.get("PATH_INFO", "")
        if isinstance(path, str) and path.startswith(self._prefix) and monitor.owns(path):
            app = monitor.handle_wsgi
            source = "perfnb"
        elif not monitor.enabled:
            return self.app(environ, start_response)
        rec = self.recorder
        call = _Call()
        call.t0 = t0 = perf_counter_ns()
        if t0 >= rec.tick_ns:
            rec.tick(t0)
        call.now = datetime.now(UTC)
        call.source = source
        call.environ = environ
        raw = environ.get("HTTP_X_PERFNB_RUN")
        call.run_id = rec.run_id(_latin1(raw)) if raw is not None else None
        call.request_bytes = 0
        raw = environ.get("CONTENT_LENGTH")
        if isinstance(raw, str) and raw.isascii() and raw.isdigit():
            call.request_bytes = min(int(raw), _MAX_LENGTH)
        address = environ.get("REMOTE_ADDR")
        call.address = address if isinstance(address, str) else ""
        who = None
        if rec.session_cookie is not None:
            raw = environ.get("HTTP_COOKIE")
            if raw is not None:
                who = rec.session(_latin1(raw))
        call.client = rec.client(who or call.address)
        # Browser batches riding on the app's request are perfnb's, not the app's.
        call.beacon = environ.pop("HTTP_X_PERFNB_BEACON", None)
        method = environ.get("REQUEST_METHOD", "GET")
        call.method = method if method in METHODS else "OTHER"
        call.ex = ex = Exchange()
        ex.rec = rec

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            t = perf_counter_ns()
            ex.start_ns = t
            try:
                ex.status = int(str(status)[:3])
                headers = self._with_timing(headers, ex, t - call.t1, call.t1 - call.t0)
            except Exception:
                rec.internal_error()
            ex.own_ns += perf_counter_ns() - t
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        call.token = _current.set(ex)
        call.t1 = perf_counter_ns()
        try:
            result = app(environ, start)
        except BaseException as exc:
            self._reset(call)
            self._finish(call, exc)
            raise
        if hasattr(result, "__len__"):
            return _SizedBody(self, call, result)
        return _Body(self, call, result)

    def _with_timing(
        self, headers: list[tuple[str, str]], ex: Exchange, app_ns: int, own_ns: int
    ) -> list[tuple[str, str]]:
        # A line of its own after the app's (see the ASGI middleware for why).
        ex.headers = headers
        value = timing_value(app_ns, own_ns, ex).decode("latin-1")
        return [*headers, ("Server-Timing", value)]

    def _reset(self, call: _Call) -> None:
        token, call.token = call.token, None
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:  # closed from another context than it was opened in
                _current.set(None)

    def _finish(self, call: _Call, exc: BaseException | None) -> None:
        t_after = perf_counter_ns()
        rec = self.recorder
        ex = call.ex
        try:
            t0 = call.t0
            if call.source == "server":
                route = rec.route(self.resolve(call.environ))
            else:
                sub = str(call.environ.get("PATH_INFO", ""))[len(self._prefix) :].strip("/")
                route = self._prefix + "/" + sub if sub in _OWN_ENDPOINTS else self._prefix
            end = ex.end_ns or t_after
            status = ex.status or 500
            duration = (end - t0) / 1e6
            record: Record = {
                "time": call.now,
                "source": call.source,
                "kind": "http",
                "service": rec.service,
                "route": route,
                "method": call.method,
                "status": status,
                "duration_ms": duration,
                "request_bytes": call.request_bytes,
                "response_bytes": ex.out_bytes,
                "client": call.client,
            }
            if (
                ex.chunks > 1
                or (ex.first_ns and ex.chunks and ex.is_event_stream())
                or route in rec.stream_routes
            ):
                record["kind"] = "stream"
                record["ttfb_ms"] = ((ex.first_ns or ex.start_ns or end) - t0) / 1e6
                record["messages_out"] = ex.chunks
            else:
                record["ttfb_ms"] = ((ex.start_ns or end) - t0) / 1e6
                record["server_ms"] = duration
            if ex.start_ns:
                record["app_ms"] = (ex.start_ns - call.t1) / 1e6
            if ex.db_count:
                record["db_ms"] = ex.db_ns / 1e6
            if call.run_id is not None:
                record["run_id"] = call.run_id
            if exc is not None:
                record["error_type"] = type(exc).__name__[:128]
            elif not ex.status:
                record["error_type"] = "NoResponse"
            self.monitor.record(record)
            if call.beacon is not None:
                self.monitor.take_beacon_header(
                    call.beacon, route=route, client=call.address or None, run_id=call.run_id
                )
        except Exception:
            rec.internal_error()
        rec.add_own((call.t1 - call.t0) + ex.own_ns + (perf_counter_ns() - t_after))


class _Body:
    """The app's response body, counted on its way out; the record is written on close."""

    __slots__ = ("_call", "_done", "_error", "_iter", "_middleware", "_result")

    def __init__(self, middleware: PerfnbWSGIMiddleware, call: _Call, result: Iterable[bytes]):
        self._middleware = middleware
        self._call = call
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._done = False
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        ex = self._call.ex
        try:
            if self._iter is None:
                self._iter = iter(self._result)
            chunk = next(self._iter)
        except StopIteration:
            if not ex.end_ns:
                ex.end_ns = perf_counter_ns()
            raise
        except BaseException as exc:
            self._error = exc
            raise
        if chunk:
            ex.chunks += 1
            ex.out_bytes += len(chunk)
            if not ex.first_ns:
                ex.first_ns = perf_counter_ns()
        return chunk

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._middleware._reset(self._call)
            self._middleware._finish(self._call, self._error)

    def __del__(self) -> None:
        # A server that never calls close() (against PEP 3333) still gets a record.
        if not self._done:
            with contextlib.suppress(Exception):  # nothing may escape a finaliser
                self.close()


class _SizedBody(_Body):
    """A body whose length the server may ask for (wsgiref sets Content-Length from it)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def _latin1(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    return bytes(value) if isinstance(value, bytes | bytearray) else b""
