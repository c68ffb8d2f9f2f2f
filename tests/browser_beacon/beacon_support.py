"""Helpers of the browser beacon tests: the demo app served with a monitor the test holds.

:func:`serve_app` serves the demo app (perfnb's middleware inside, with a
:class:`Monitor` whose records the test reads) on uvicorn on 127.0.0.1 with a
free port, with or without the beacon, plus a few test-only endpoints: a
WebSocket echo, an SSE stream, and a sink for values a page reports about
itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from perfnb.demo.app import create_app
from perfnb.schema import Record, Sink
from perfnb.server import Monitor
from perfnb.server.beaconjs import BeaconScript

PREFIX = "/api/performance-metrics"


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, page: Any = None) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` s.

    With ``page``, the wait runs Playwright's event loop (a plain sleep would hold
    back the page's request and response events that the predicate reads).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def decode_batch(value: str) -> dict[str, Any]:
    """An ``X-Perfnb-Beacon`` header value as the batch it carries."""
    padded = value + "=" * (-len(value) % 4)
    out: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return out


@dataclass
class Served:
    """A running app: its URL, monitor, beacon wrapper and what the test endpoints saw."""

    url: str
    monitor: Monitor
    beacon: BeaconScript | None
    records: list[Record]
    reported: list[dict[str, Any]] = field(default_factory=list)

    def browser_records(self, kind: str | None = None) -> list[Record]:
        out = [r for r in list(self.records) if r.get("source") == "browser"]
        return [r for r in out if kind is None or r.get("kind") == kind]

    def own_requests(self, endpoint: str) -> list[Record]:
        """perfnb's records of requests to ``PREFIX/endpoint`` (e.g. the intake)."""
        route = f"{PREFIX}/{endpoint}"
        return [r for r in list(self.records) if r.get("route") == route]


def _test_routes(reported: list[dict[str, Any]]) -> Starlette:
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(Exception):
            while True:
                text = await ws.receive_text()
                await ws.send_text(text)

    async def events(request: Request) -> StreamingResponse:
        async def body() -> Any:
            for i in range(3):
                yield f"data: {i}\n\n".encode()
            # Stay open like a real feed until the page closes it.
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)

        return StreamingResponse(body(), media_type="text/event-stream")

    async def report(request: Request) -> Response:
        with contextlib.suppress(ValueError):
            reported.append(json.loads(await request.body()))
        return Response(status_code=204)

    async def headers(request: Request) -> Response:
        seen = {k: v for k, v in request.headers.items() if k.startswith("x-")}
        return JSONResponse({"method": request.method, "headers": seen})

    return Starlette(
        routes=[
            Route("/_test/headers", headers, methods=["GET", "POST"]),
            WebSocketRoute("/_test/ws", echo),
            Route("/_test/sse", events),
            Route("/_test/report", report, methods=["POST"]),
        ]
    )


class _Dispatch:
    """Test endpoints under /_test, everything else to the demo app."""

    def __init__(self, demo: Any, extra: Any) -> None:
        self.demo = demo
        self.extra = extra

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith("/_test/"):
            await self.extra(scope, receive, send)
        else:
            await self.demo(scope, receive, send)


@contextlib.contextmanager
def serve_app(*, beacon: bool = True, sink: Sink | None = None, **options: Any) -> Iterator[Served]:
    records: list[Record] = []

    def keep(record: Record) -> None:
        records.append(record)
        if sink is not None:
            sink(record)

    monitor = Monitor(service="demo", sink=keep)
    reported: list[dict[str, Any]] = []
    # the test wraps the beacon itself (with its options), so the app comes without one
    app: Any = _Dispatch(create_app(monitor=monitor, beacon=False), _test_routes(reported))
    wrapper = None
    if beacon:
        wrapper = app = BeaconScript(app, monitor=monitor, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
        yield Served(f"http://127.0.0.1:{port}", monitor, wrapper, records, reported)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class PageLog:
    """What one page did: its requests (method, URL, beacon header) and its errors."""

    requests: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: ``X-Perfnb-Control`` values of the responses the page received, in order.
    controls: list[dict[str, Any]] = field(default_factory=list)

    def app_requests(self) -> list[tuple[str, str]]:
        """(method, path) of the page's requests that are the app's own."""
        out = []
        for method, url, _, _ in list(self.requests):
            path = "/" + url.split("/", 3)[3].split("?", 1)[0]
            if path.startswith(("/_perfnb/", PREFIX)) or path == "/favicon.ico":
                continue
            out.append((method, path))
        return out

    def carried(self) -> list[dict[str, Any]]:
        return [decode_batch(h) for _, _, h, _ in list(self.requests) if h]


def is_benign(message: Any) -> bool:
    # The browser asks every site for /favicon.ico; the demo app has none.
    location = message.location or {}
    return "404" in message.text and str(location.get("url", "")).endswith("/favicon.ico")


def demo_started(page: Any) -> bool:
    """The demo front end has signed in and runs its polling loop."""
    return bool(page.evaluate("() => !!(window.perfnbDemo && window.perfnbDemo.state.polls > 0)"))


def make_clicks_slow(page: Any, selector: str, *, ms: int = 80) -> None:
    """Make clicks on ``selector`` take ``ms`` of script time.

    web-vitals only observes interactions of 40 ms or more; on a fast machine a
    click is quicker, and INP would never be reported.
    """
    page.evaluate(
        """([selector, ms]) => document.querySelector(selector).addEventListener('click', () => {
            const end = performance.now() + ms;
            while (performance.now() < end) {}
        })""",
        [selector, ms],
    )
