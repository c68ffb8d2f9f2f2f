"""Helpers of the feed tests: a tiny monitored ASGI app and uvicorn on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from perfnb.schema import Record
from perfnb.server.monitor import Monitor

Scope = dict[str, Any]


def http_record(route: str = "/hello", status: int = 200, **extra: Any) -> Record:
    rec: dict[str, Any] = {
        "time": datetime.now(UTC),
        "source": "server",
        "kind": "http",
        "route": route,
        "method": "GET",
        "status": status,
        "duration_ms": 1.5,
    }
    rec.update(extra)
    return rec  # type: ignore[return-value]


def monitored_app(monitor: Monitor) -> Callable[..., Any]:
    """A minimal app: perfnb's endpoints under the prefix, ``/hello`` records itself,
    ``X-Perfnb-Beacon`` headers go to the monitor, lifespan shutdown closes it."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    monitor.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if monitor.owns(scope["path"]):
            await monitor.handle_asgi(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"x-perfnb-beacon":
                monitor.take_beacon_header(value, route=scope["path"], client=scope["client"][0])
        body = b"hello"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        monitor.record(http_record(scope["path"]))

    return app


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextlib.contextmanager
def serve(
    app: Callable[..., Any], *, host: str = "127.0.0.1", port: int = 0, graceful: float = 1.0
) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread (on ``port``, else a free one); yield its URL."""
    sock = free_socket(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=graceful,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class SSEReader:
    """Reads events from a streaming httpx response (test-side, deliberately simple)."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next_event(self) -> dict[str, str]:
        event: dict[str, str] = {}
        data: list[str] = []
        for line in self._lines:
            if line == "":
                if data or event:
                    event["data"] = "\n".join(data)
                    return event
                continue
            if line.startswith(":"):
                event.setdefault("comments", "")
                event["comments"] += line
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            else:
                event[field] = value
        raise EOFError("stream ended")

    def read_to_end(self) -> list[dict[str, str]]:
        """Every remaining event; returns only when the server ends the stream."""
        events = []
        try:
            while True:
                events.append(self.next_event())
        except EOFError:
            return events
