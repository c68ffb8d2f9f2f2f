"""A tiny target app on a real uvicorn on 127.0.0.1 (free port, background thread).

The app answers every path after a fixed delay (``?delay_ms=`` or the app's
default), fails with 500 while ``fail`` is set, and logs every request it sees
with its own wall-clock time and the ``X-Perfnb-Run`` header, so tests judge load
by the server's own timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@contextlib.contextmanager
def served(app: TargetApp) -> Iterator[TargetApp]:
    """Serve ``app`` on uvicorn on a free loopback port in a background thread."""
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it
    # Nagle and delayed ACKs add 40 ms to every response after the first
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", http="httptools", loop="asyncio", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class TargetApp:
    delay_ms: float = 0.0
    fail: bool = False
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (time, path, run id)
    clients: set[int] = field(default_factory=set)  # client ports seen (connections)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = dict(scope["headers"])
        run = headers.get(b"x-perfnb-run", b"").decode()
        self.log.append((time.time(), scope["path"], run))
        delay = self.delay_ms
        query = scope.get("query_string", b"").decode()
        if query.startswith("delay_ms="):
            delay = float(query.split("=", 1)[1])
        self.clients.add(scope["client"][1])
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/chunked":
            # no content-length: uvicorn sends a chunked body
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for piece in (b"one-", b"two-", b"three"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/echo":
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": received})
            return
        if delay:
            await asyncio.sleep(delay / 1000.0)
        status = 500 if self.fail else 200
        body = b'{"ok": true}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"server-timing", b"app;dur=1.5, db;dur=0.5"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def stuck_journey(session: object) -> None:
    """A journey that blocks its worker's event loop, as a runaway user script would."""
    time.sleep(30)
