"""WebSocket connections as records: one ``kind="websocket"`` record when a connection ends.

The ASGI middleware hands WebSocket scopes here. The record (``method="WS"``)
carries the connection's duration, messages and bytes each way
(``messages_in``, ``request_bytes``, ``messages_out``, ``response_bytes``) and
the close code in ``status`` (1005 when the client closed without one, 1000
when the app closed without one). An exception from the app is recorded as
``error_type`` and re-raised unchanged.

>>> close_code(1001, 1000), close_code("x", 1005)
(1001, 1005)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any

from perfnb.schema import Record
from perfnb.server.recording import Recorder
from perfnb.server.routes import AsgiRouteResolver

__all__ = ["close_code", "message_size", "serve_websocket"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INT32_MAX = 2**31 - 1


def message_size(message: Message) -> int:
    """Bytes of a WebSocket message's payload (text counted as UTF-8)."""
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text = message.get("text")
    return len(text.encode("utf-8", "replace")) if isinstance(text, str) else 0


def close_code(code: object, default: int) -> int:
    """A close code as recorded: ``default`` for anything that is not one."""
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 32767:
        return code
    return default


async def serve_websocket(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    rec: Recorder,
    resolve: AsgiRouteResolver,
) -> None:
    """Run ``app`` on a WebSocket connection and record it when it ends; never fails for perfnb.

    Messages pass unchanged both ways; only their counts and sizes are noted.
    """
    monitor = rec.monitor
    if not monitor.wants("websocket"):
        await app(scope, receive, send)
        return
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
            counts[1] += message_size(message)
        elif mtype == "websocket.disconnect" and not counts[4]:
            counts[4] = close_code(message.get("code"), 1005)
        return message

    async def outbound(message: Message) -> None:
        mtype = message.get("type")
        if mtype == "websocket.send":
            counts[2] += 1
            counts[3] += message_size(message)
        elif mtype == "websocket.close" and not counts[4]:
            counts[4] = close_code(message.get("code"), 1000)
        await send(message)

    error: BaseException | None = None
    try:
        await app(scope, inbound, outbound)
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
                "route": rec.route(resolve(scope)),
                "method": "WS",
                "status": counts[4],
                "duration_ms": (perf_counter_ns() - t0) / 1e6,
                "messages_in": min(counts[0], _INT32_MAX),
                "request_bytes": counts[1],
                "messages_out": min(counts[2], _INT32_MAX),
                "response_bytes": counts[3],
                "client": rec.client(str(peer[0]) if peer else ""),
            }
            if error is not None:
                record["error_type"] = type(error).__name__[:128]
            monitor.record(record)
        except Exception:
            rec.internal_error()
