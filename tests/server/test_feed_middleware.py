"""The feed behind the real middleware: a Starlette app with PerfnbMiddleware on uvicorn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from feed_support import SSEReader, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from perfnb.server import Monitor, PerfnbMiddleware
from perfnb.server.beacon import encode_header
from perfnb.server.monitor import FeedLimits

pytestmark = pytest.mark.slow

PREFIX = "/api/performance-metrics"


async def cards(request: Request) -> JSONResponse:
    seen = request.headers.get("x-perfnb-beacon")
    return JSONResponse({"card": request.path_params["card_id"], "beacon_seen": seen})


def _app(monitor: Monitor) -> PerfnbMiddleware:
    routes = [Route("/api/cards/{card_id}", cards)]
    return PerfnbMiddleware(Starlette(routes=routes), monitor=monitor)


def test_perfnb_traffic_is_tagged_and_left_out_of_the_apps_figures() -> None:
    monitor = Monitor(limits=FeedLimits(linger_seconds=0.0))
    with serve(_app(monitor)) as url:
        for i in range(5):
            assert httpx.get(f"{url}/api/cards/{i}").status_code == 200
        for _ in range(5):
            httpx.get(f"{url}{PREFIX}")
        snapshot = httpx.get(f"{url}{PREFIX}", params={"route": "/api/cards/{card_id}"}).json()
    records = monitor.buffer.latest(1000)
    app_http = [r for r in records if r["kind"] == "http" and r["source"] == "server"]
    own = [r for r in records if r["source"] == "perfnb" and r["kind"] == "http"]
    assert {r["route"] for r in app_http} == {"/api/cards/{card_id}"}
    assert len(app_http) == 5
    assert len(own) >= 5
    assert all(r["route"].startswith(PREFIX) for r in own)
    assert snapshot["route"] == "/api/cards/{card_id}"
    assert snapshot["metrics"]["apiResponseTime"] is not None
    assert snapshot["health"]["apiPolling"] == "healthy"


def test_stream_through_the_middleware_delivers_the_apps_records() -> None:
    monitor = Monitor(limits=FeedLimits(linger_seconds=0.0))
    with serve(_app(monitor)) as url:
        with httpx.stream("GET", f"{url}{PREFIX}/stream", params={"since": "now"}) as response:
            reader = SSEReader(response)
            while reader.next_event().get("event") != "hello":
                pass
            httpx.get(f"{url}/api/cards/7")
            routes: list[str] = []
            while "/api/cards/{card_id}" not in routes:
                event = reader.next_event()
                if event.get("event") == "records":
                    routes += [r.get("route", "") for r in json.loads(event["data"])["records"]]
        # The stream itself is recorded once it ends, as perfnb traffic of kind stream.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            streams = [r for r in monitor.buffer.latest(100) if r["kind"] == "stream"]
            if streams:
                break
            time.sleep(0.02)
    assert streams[0]["source"] == "perfnb"
    assert streams[0]["route"] == f"{PREFIX}/stream"


def test_beacon_header_is_taken_out_before_the_app_sees_it() -> None:
    monitor = Monitor()
    batch = {"v": 1, "page": "/cards/7", "records": [{"kind": "vital", "t": time.time() * 1000}]}
    with serve(_app(monitor)) as url:
        good = httpx.get(f"{url}/api/cards/7", headers={"X-Perfnb-Beacon": encode_header(batch)})
        bad = httpx.get(f"{url}/api/cards/7", headers={"X-Perfnb-Beacon": "@@not base64@@"})
    plain = {"card": "7", "beacon_seen": None}
    assert good.json() == plain
    assert bad.json() == plain
    assert good.status_code == bad.status_code == 200
    counted = monitor.counters
    assert (counted["beacon_records"], counted["beacon_batches_bad"]) == (1, 1)
    (vital,) = [r for r in monitor.buffer.latest(100) if r["kind"] == "vital"]
    assert vital["source"] == "browser"


def test_lifespan_shutdown_writes_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "feed.spool"
    monitor = Monitor(spool=spool)
    with serve(_app(monitor)) as url:
        httpx.get(f"{url}/api/cards/1")
    assert monitor.closed
    restored = Monitor(spool=spool)
    assert restored.boot == monitor.boot
    assert restored.last_seq == monitor.last_seq
