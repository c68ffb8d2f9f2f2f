"""The middleware's common path and the requests it hands elsewhere (in process, ASGI)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from perfnb.schema import Record, validate_record
from perfnb.server import PerfnbMiddleware
from perfnb.server.websocket import close_code, message_size

BACKGROUND_NS = 200_000_000


def _busy_background() -> None:
    # CPU-bound, so the time passes whatever the machine's load.
    deadline = time.perf_counter_ns() + BACKGROUND_NS
    while time.perf_counter_ns() < deadline:
        pass


async def with_background(request: Request) -> Response:
    return PlainTextResponse("sent", background=BackgroundTask(_busy_background))


async def lookalike(request: Request) -> Response:
    return PlainTextResponse("mine")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/later", with_background),
            Route("/api/performance-metrics-archive/{day}", lookalike),
        ]
    )


async def _get(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        return await client.get(path)


def test_duration_ends_at_the_last_body_byte_not_after_background_tasks() -> None:
    records: list[Record] = []
    app = PerfnbMiddleware(make_app(), service="shop", sink=records.append)
    response = asyncio.run(_get(app, "/later"))
    assert response.text == "sent"
    assert "app;dur=" in response.headers["server-timing"]
    (record,) = [r for r in records if r["kind"] == "http"]
    validate_record(record)
    assert record["route"] == "/later"
    assert record["response_bytes"] == 4
    # The background task ran after the body went out: it is not the request's time.
    assert record["duration_ms"] < BACKGROUND_NS / 1e6
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]


def test_paths_that_only_look_like_the_prefix_are_the_apps() -> None:
    records: list[Record] = []
    app = PerfnbMiddleware(make_app(), service="shop", sink=records.append)
    response = asyncio.run(_get(app, "/api/performance-metrics-archive/monday"))
    assert response.text == "mine"
    assert "server-timing" in response.headers
    (record,) = [r for r in records if r["kind"] == "http"]
    assert record["source"] == "server"
    assert record["route"] == "/api/performance-metrics-archive/{day}"


def test_own_endpoints_carry_server_timing_and_are_perfnb_traffic() -> None:
    records: list[Record] = []
    app = PerfnbMiddleware(make_app(), service="shop", sink=records.append)
    response = asyncio.run(_get(app, "/api/performance-metrics/control"))
    assert response.status_code == 200
    assert "server-timing" in response.headers
    (record,) = [r for r in records if r["kind"] == "http"]
    assert (record["source"], record["route"]) == ("perfnb", "/api/performance-metrics/control")


def test_ring_entries_build_the_same_records_as_the_sink_gets() -> None:
    ring_only = PerfnbMiddleware(make_app(), service="shop")
    asyncio.run(_get(ring_only, "/later"))
    asyncio.run(_get(ring_only, "/api/performance-metrics-archive/x"))
    built = [r for r in ring_only.monitor.buffer.latest(10) if r["kind"] == "http"]
    assert [r["route"] for r in built] == ["/later", "/api/performance-metrics-archive/{day}"]
    for record in built:
        validate_record(record)


def test_websocket_sizes_and_close_codes() -> None:
    assert message_size({"type": "websocket.send", "bytes": b"abc"}) == 3
    assert message_size({"type": "websocket.send", "text": "é"}) == 2
    assert message_size({"type": "websocket.send"}) == 0
    assert close_code(4000, 1000) == 4000
    assert close_code(True, 1000) == 1000
    assert close_code(-1, 1005) == 1005
    assert close_code(None, 1005) == 1005


def test_doctests() -> None:
    import doctest

    import perfnb.server.exchange
    import perfnb.server.websocket

    for module in (perfnb.server.exchange, perfnb.server.websocket):
        assert doctest.testmod(module).failed == 0
