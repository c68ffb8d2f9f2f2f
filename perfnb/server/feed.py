"""perfnb's endpoints under the monitor's prefix, as pure ASGI and as WSGI.

===========================  ======  ===================================================
path                         method  answer
===========================  ======  ===================================================
``<prefix>``                 GET     the snapshot (``?route=``, ``?load=1``), JSON
``<prefix>/stream``          GET     Server-Sent Events of records (see :mod:`.sse`)
``<prefix>/control``         GET     the control state and counters, JSON
``<prefix>/control``         POST    ``{"enabled", "kinds", "sample"}`` (any subset);
                                     answers the new state, or 400 naming the field
``<prefix>/beacon``          POST    a browser batch (see :mod:`.beacon`): 204, 400 for
                                     a bad envelope, 413 past the size cap (unread)
===========================  ======  ===================================================

Every path but the beacon needs authorisation (:mod:`.auth`); a refusal is a
bare 401 whatever the reason, and comes before any 404 or 405 so it reveals
nothing about what exists. The beacon is open because browsers of real users
send it; it only ever takes records in, within size caps.

One dispatcher decides what to do from the method, path, query, headers and
peer; the ASGI and WSGI adapters only read bodies and write answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

from perfnb.errors import ConfigError
from perfnb.server.auth import PROXY_HEADERS
from perfnb.server.sse import KEEPALIVE, AsyncWaiter, Cursor, StreamCursor, ThreadWaiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, MutableMapping

    from perfnb.server.monitor import Monitor

    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    StartResponse = Callable[..., Any]

__all__ = ["serve_asgi", "serve_wsgi"]

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx and friends buffer responses unless told otherwise
    (b"x-accel-buffering", b"no"),
]


class Reply(NamedTuple):
    """A complete answer."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ReadBody(NamedTuple):
    """Read the request body (at most ``limit`` bytes), then answer with ``then(body)``.

    ``too_large()`` answers (and counts) a body past the limit.
    """

    limit: int
    then: Callable[[bytes], Reply]
    too_large: Callable[[], Reply]


class OpenStream(NamedTuple):
    """Answer with the SSE stream that ``cursor`` produces."""

    cursor: StreamCursor


@dataclass(slots=True)
class Request:
    """What the dispatcher needs of a request, from either interface."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]
    client: str | None


def _reply(status: int, doc: object | None = None) -> Reply:
    if doc is None:
        return Reply(status, [_NO_STORE, (b"content-length", b"0")], b"")
    body = json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8")
    return Reply(status, [_JSON, _NO_STORE, (b"content-length", str(len(body)).encode())], body)


UNAUTHORISED = _reply(401)
_TOO_LARGE = _reply(413, {"error": "request body too large"})


def _too_large() -> Reply:
    return _TOO_LARGE


def _method_not_allowed(allow: bytes) -> Reply:
    status, headers, body = _reply(405, {"error": f"allowed methods: {allow.decode()}"})
    return Reply(status, [*headers, (b"allow", allow)], body)


def dispatch(monitor: Monitor, request: Request) -> Reply | ReadBody | OpenStream:
    """Decide the answer to ``request`` (whose path is under ``monitor.prefix``)."""
    path = request.path
    if not monitor.owns(path):
        sub = None
    else:
        sub = (path if monitor.prefix == "/" else path[len(monitor.prefix) :]).rstrip("/")
    method = request.method
    if sub == "/beacon":
        if method != "POST":
            return _method_not_allowed(b"POST")
        limit = monitor.beacon_limits.body_bytes

        def beacon_too_large() -> Reply:
            monitor._count("beacon_too_large")
            return _TOO_LARGE

        return ReadBody(limit, lambda body: _beacon(monitor, body, request), beacon_too_large)
    if not monitor.auth.allows(
        client=request.client,
        authorization=_header(request, b"authorization"),
        query_token=request.query.get("token"),
        proxied=any(name in request.headers for name in PROXY_HEADERS),
    ):
        monitor._count("unauthorised")
        return UNAUTHORISED
    if sub == "":
        if method not in ("GET", "HEAD"):
            return _method_not_allowed(b"GET, HEAD")
        route = request.query.get("route") or None
        load = request.query.get("load", "") in ("1", "true", "yes")
        return _reply(200, monitor.snapshot(route=route, include_load=load))
    if sub == "/stream":
        if method != "GET":
            return _method_not_allowed(b"GET")
        last_id = _header(request, b"last-event-id") or request.query.get("last_event_id")
        since = request.query.get("since", "oldest")
        if monitor.fleet is not None:
            from perfnb.server.fleetfeed import FleetCursor

            return OpenStream(FleetCursor(monitor, last_event_id=last_id, since=since))
        return OpenStream(Cursor(monitor, last_event_id=last_id, since=since))
    if sub == "/control":
        if method in ("GET", "HEAD"):
            return _reply(200, monitor.state())
        if method != "POST":
            return _method_not_allowed(b"GET, HEAD, POST")
        limit = monitor.limits.control_bytes
        return ReadBody(limit, lambda body: _control(monitor, body), _too_large)
    return _reply(404, {"error": "not found"})


def _header(request: Request, name: bytes) -> str | None:
    value = request.headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _beacon(monitor: Monitor, body: bytes, request: Request) -> Reply:
    _, error = monitor._take_body(body, client=request.client)
    if error is not None:
        return _reply(400, {"error": error})
    return _reply(204)


_CONTROL_FIELDS = ("enabled", "kinds", "sample")


def _control(monitor: Monitor, body: bytes) -> Reply:
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        return _reply(400, {"error": "control: the body is not JSON"})
    if not isinstance(doc, dict):
        return _reply(400, {"error": "control: expected a JSON object"})
    for key in doc:
        if key not in _CONTROL_FIELDS:
            msg = f"control: unknown field {key!r}; accepted: enabled, kinds, sample"
            return _reply(400, {"error": msg})
    changes: dict[str, Any] = {}
    if "enabled" in doc:
        changes["enabled"] = doc["enabled"]
        if doc["enabled"] is None:
            return _reply(400, {"error": "enabled: got null; expected true or false"})
    if "kinds" in doc:
        changes["kinds"] = doc["kinds"]
    if "sample" in doc:
        changes["sample"] = doc["sample"]
        if doc["sample"] is None:
            return _reply(400, {"error": "sample: got null; expected a number between 0 and 1"})
    try:
        monitor.configure(**changes)
    except ConfigError as exc:
        return _reply(400, {"error": str(exc)})
    monitor.publish_control()
    return _reply(200, monitor.state())


# -- ASGI ---------------------------------------------------------------------------------


class _Disconnected(Exception):
    pass


async def serve_asgi(
    monitor: Monitor, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Serve one ASGI HTTP request under the monitor's prefix."""
    if scope.get("type") != "http":
        if scope.get("type") == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        return
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name.lower(), value)
    client = scope.get("client")
    request = Request(
        method=scope.get("method", "GET"),
        path=scope.get("path", ""),
        query=_query(scope.get("query_string", b"").decode("latin-1")),
        headers=headers,
        client=client[0] if client else None,
    )
    action = dispatch(monitor, request)
    if isinstance(action, ReadBody):
        try:
            body = await _read_asgi_body(receive, action.limit, headers.get(b"content-length"))
        except _Disconnected:
            return
        action = action.then(body) if body is not None else action.too_large()
    if isinstance(action, OpenStream):
        await _stream_asgi(monitor, action.cursor, receive, send)
        return
    await send({"type": "http.response.start", "status": action.status, "headers": action.headers})
    body = b"" if request.method == "HEAD" else action.body
    await send({"type": "http.response.body", "body": body})


def _query(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True)[:32]:
        out.setdefault(key, value)
    return out


def _declared_length(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


async def _read_asgi_body(receive: Receive, limit: int, declared: bytes | None) -> bytes | None:
    """The body, or ``None`` when it is (or is declared) larger than ``limit``."""
    length = _declared_length(declared)
    if length is not None and length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _stream_asgi(
    monitor: Monitor, cursor: StreamCursor, receive: Receive, send: Send
) -> None:

    limits = monitor.limits
    waiter = AsyncWaiter()
    gone = asyncio.Event()

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                gone.set()
                waiter.armed = True
                waiter.wake()
                return

    watcher = asyncio.ensure_future(watch_disconnect())
    monitor._add_waiter(waiter)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.stream_seconds
    poll = cursor.poll_seconds
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": cursor.opening(), "more_body": True})
        last_sent = loop.time()
        while not gone.is_set() and not monitor.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            chunk = cursor.pull()
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last_sent = loop.time()
                continue
            waiter.event.clear()
            waiter.armed = True
            # Re-check after arming: a record appended in between would otherwise
            # find the waiter unarmed and its wake-up would be lost.
            if cursor.pending() or gone.is_set() or monitor.closed:
                waiter.armed = False
                continue
            wait = min(limits.keepalive_seconds, remaining)
            try:
                await asyncio.wait_for(waiter.event.wait(), timeout=wait if poll is None else poll)
            except TimeoutError:
                waiter.armed = False
                now = loop.time()
                if deadline - now > 0 and now - last_sent >= limits.keepalive_seconds - 1e-3:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    last_sent = now
                continue
            if limits.linger_seconds > 0 and not gone.is_set() and not monitor.closed:
                await asyncio.sleep(limits.linger_seconds)
        if not gone.is_set():
            if monitor.closed:  # shutting down: send what is left before ending
                while chunk := cursor.pull():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        # Some servers raise when the consumer has gone (uvicorn's
        # ClientDisconnected is an OSError): a departed reader is not an error.
        pass
    finally:
        monitor._remove_waiter(waiter)
        watcher.cancel()


# -- WSGI ---------------------------------------------------------------------------------


def serve_wsgi(
    monitor: Monitor, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """Serve one WSGI request under the monitor's prefix.

    The stream is a generator that ends after ``FeedLimits.stream_seconds``; it
    holds one worker thread of the WSGI server while it runs. Where the server
    runs one request at a time per process (``wsgi.multithread`` false, as
    gunicorn's sync workers) or with a fleet directory, it ends as soon as it
    has sent what there is.
    """
    headers: dict[bytes, bytes] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            name = key[5:].replace("_", "-").lower().encode("latin-1")
            headers[name] = value.encode("latin-1", "replace")
    if "CONTENT_LENGTH" in environ:
        headers[b"content-length"] = str(environ["CONTENT_LENGTH"]).encode("latin-1", "replace")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    request = Request(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=path,
        query=_query(environ.get("QUERY_STRING", "")),
        headers=headers,
        client=environ.get("REMOTE_ADDR") or None,
    )
    action = dispatch(monitor, request)
    if isinstance(action, ReadBody):
        body = _read_wsgi_body(environ, action.limit)
        action = action.then(body) if body is not None else action.too_large()
    if isinstance(action, OpenStream):
        start_response("200 OK", [(k.decode(), v.decode()) for k, v in _SSE_HEADERS])
        # A server that runs one request at a time per process (gunicorn's sync
        # workers say so with wsgi.multithread false) must never be held by a feed.
        hold = bool(environ.get("wsgi.multithread", False)) and action.cursor.poll_seconds is None
        return _stream_wsgi(monitor, action.cursor, hold=hold)
    status = f"{action.status} {_REASONS.get(action.status, '')}".rstrip()
    start_response(status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in action.headers])
    return [b"" if request.method == "HEAD" else action.body]


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
}


def _read_wsgi_body(environ: dict[str, Any], limit: int) -> bytes | None:
    length = _declared_length(environ.get("CONTENT_LENGTH"))
    if length is not None and length > limit:
        return None
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    # Without a declared length read one byte past the cap to notice an oversized body.
    data: bytes = stream.read(length if length is not None else limit + 1)
    return None if len(data) > limit else data


def _stream_wsgi(monitor: Monitor, cursor: StreamCursor, *, hold: bool) -> Iterator[bytes]:

    limits = monitor.limits
    waiter = ThreadWaiter()
    monitor._add_waiter(waiter)
    deadline = time.monotonic() + limits.stream_seconds
    try:
        yield cursor.opening()
        while not monitor.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = cursor.pull()
            if chunk:
                yield chunk
                continue
            if not hold:
                # Caught up: end, and the consumer comes back after the ``retry`` hint
                # with its Last-Event-ID. A single-threaded worker stays free for the
                # app, and a fleet's records from other processes wake nobody here.
                break
            waiter.event.clear()
            waiter.armed = True
            if cursor.pending() or monitor.closed:
                waiter.armed = False
                continue
            if waiter.event.wait(min(limits.keepalive_seconds, remaining)):
                if limits.linger_seconds > 0 and not monitor.closed:
                    time.sleep(limits.linger_seconds)
            else:
                waiter.armed = False
                if deadline - time.monotonic() > 0:
                    yield KEEPALIVE
        if monitor.closed:  # shutting down: send what is left before ending
            while chunk := cursor.pull():
                yield chunk
    finally:
        monitor._remove_waiter(waiter)
