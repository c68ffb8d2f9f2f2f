"""The ASGI middleware in-process: records, Server-Timing, streams, errors, input checks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from perfnb.collect.servertiming import parse_server_timing
from perfnb.errors import ConfigError
from perfnb.schema import Record, validate_record
from perfnb.server import Monitor, PerfnbMiddleware, timing
from perfnb.server.beacon import encode_header

BEACON = {"v": 1, "page": "/cards", "records": [{"kind": "vital", "name": "LCP", "value": 1.0}]}


async def card(request: Request) -> Response:
    with timing("render"):
        pass
    return PlainTextResponse(f"card {request.path_params['card_id']}")


async def echo_headers(request: Request) -> Response:
    names = sorted(k.decode("latin-1") for k, _ in request.scope["headers"])
    return PlainTextResponse(",".join(names))


async def upload(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(str(len(body)))


async def own_timing(request: Request) -> Response:
    with timing("db"):
        pass
    return PlainTextResponse("t", headers={"Server-Timing": 'cache;desc="hit"'})


async def boom(request: Request) -> Response:
    raise RuntimeError("handler failed")


async def sse(request: Request) -> Response:
    async def events() -> AsyncIterator[str]:
        for index in range(3):
            yield f"data: {index}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def chunks(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a" * 10
        yield b"b" * 10

    return StreamingResponse(parts(), media_type="text/plain")


async def poll(request: Request) -> Response:
    return PlainTextResponse("nothing new")


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    for _ in range(2):
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
    await websocket.close(code=1001)


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/cards/{card_id}", card),
            Route("/headers", echo_headers),
            Route("/upload", upload, methods=["POST"]),
            Route("/timed", own_timing),
            Route("/boom", boom),
            Route("/sse", sse),
            Route("/chunks", chunks),
            Route("/poll", poll),
            WebSocketRoute("/ws", socket),
        ]
    )


def middleware(**options: Any) -> tuple[PerfnbMiddleware, list[Record]]:
    records: list[Record] = []
    options.setdefault("sink", records.append)
    return PerfnbMiddleware(make_app(), service="shop", **options), records


async def fetch(app: PerfnbMiddleware, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        response = await client.request(method, path, **kwargs)
    app.flush()
    return response


def http_records(records: list[Record]) -> list[Record]:
    return [r for r in records if r["kind"] in ("http", "stream")]


def test_one_record_per_request_with_the_route_template() -> None:
    app, records = middleware()
    response = asyncio.run(fetch(app, "GET", "/cards/42", headers={"X-Perfnb-Run": "run-7"}))
    assert response.text == "card 42"
    (record,) = http_records(records)
    validate_record(record)
    assert record["route"] == "/cards/{card_id}"
    assert (record["method"], record["status"], record["source"]) == ("GET", 200, "server")
    assert record["service"] == "shop"
    assert record["run_id"] == "run-7"
    assert record["response_bytes"] == len(b"card 42")
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]
    assert record["client"] != "127.0.0.1"
    assert len(record["client"]) == 16


def test_request_bytes_from_the_body_length() -> None:
    app, records = middleware()
    response = asyncio.run(fetch(app, "POST", "/upload", content=b"x" * 1234))
    assert response.text == "1234"
    (record,) = http_records(records)
    assert record["request_bytes"] == 1234


def test_server_timing_carries_app_spans_db_and_perfnb() -> None:
    app, records = middleware()
    response = asyncio.run(fetch(app, "GET", "/cards/1"))
    names = [m.name for m in parse_server_timing(response.headers.get_list("server-timing"))]
    assert names == ["app", "render", "perfnb"]
    response = asyncio.run(fetch(app, "GET", "/timed"))
    lines = response.headers.get_list("server-timing")
    # The app's own value is kept as it was, perfnb's follows it.
    assert lines[0] == 'cache;desc="hit"'
    metrics = parse_server_timing(lines)
    assert [m.name for m in metrics] == ["cache", "app", "db", "perfnb"]
    assert all(m.dur >= 0 for m in metrics)
    assert http_records(records)[-1]["db_ms"] >= 0


def test_unmatched_paths_share_one_bucket() -> None:
    app, records = middleware()

    async def scan() -> None:
        for path in ("/wp-admin", "/.env", "/cards", "/a/b/c/d", "/%00"):
            await fetch(app, "GET", path)

    asyncio.run(scan())
    assert {r["route"] for r in http_records(records)} == {"<unmatched>"}
    assert {r["status"] for r in http_records(records)} == {404}


def test_unknown_methods_are_bucketed() -> None:
    app, records = middleware()
    asyncio.run(fetch(app, "BREW", "/cards/1"))
    assert http_records(records)[0]["method"] == "OTHER"


def test_handler_error_is_recorded_and_reraised_unchanged() -> None:
    app, records = middleware()

    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            await client.get("/boom")

    with pytest.raises(RuntimeError, match="handler failed"):
        asyncio.run(call())
    app.flush()
    (record,) = http_records(records)
    assert (record["status"], record["error_type"]) == (500, "RuntimeError")


def test_error_before_any_response_is_a_500() -> None:
    records: list[Record] = []

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("no response at all")

    app = PerfnbMiddleware(broken, sink=records.append)

    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            await client.get("/")

    with pytest.raises(ValueError, match="no response"):
        asyncio.run(call())
    app.flush()
    (record,) = http_records(records)
    assert (record["status"], record["error_type"], record["route"]) == (
        500,
        "ValueError",
        "<unmatched>",
    )


@pytest.mark.parametrize(
    "value", [b"", b"has space", b"x" * 65, b"-leading", "ünï".encode("latin-1"), b"a/b"]
)
def test_bad_run_ids_are_counted_and_dropped(value: bytes) -> None:
    app, records = middleware()
    response = asyncio.run(fetch(app, "GET", "/cards/1", headers={"X-Perfnb-Run": value}))
    assert response.status_code == 200
    assert "run_id" not in http_records(records)[0]
    assert app.recorder.counters["bad_run_id"] == 1


def test_beacon_header_is_taken_and_hidden_from_the_app() -> None:
    app, _ = middleware()
    headers = {"X-Perfnb-Beacon": encode_header(BEACON), "X-Other": "1"}
    response = asyncio.run(fetch(app, "GET", "/headers", headers=headers))
    assert "x-other" in response.text.split(",")
    assert "x-perfnb-beacon" not in response.text.split(",")
    assert app.monitor.counters["beacon_batches"] == 1
    response = asyncio.run(fetch(app, "GET", "/headers", headers={"X-Perfnb-Beacon": "%%%"}))
    assert response.status_code == 200
    assert app.monitor.counters["beacon_batches_bad"] == 1


def test_event_streams_and_chunked_bodies_are_streams() -> None:
    app, records = middleware(stream_routes=["/poll"])

    async def run() -> None:
        await fetch(app, "GET", "/sse")
        await fetch(app, "GET", "/chunks")
        await fetch(app, "GET", "/cards/1")
        await fetch(app, "GET", "/poll")

    asyncio.run(run())
    by_route = {r["route"]: r for r in http_records(records)}
    assert by_route["/sse"]["kind"] == "stream"
    assert by_route["/sse"]["messages_out"] == 3
    assert by_route["/chunks"]["kind"] == "stream"
    assert by_route["/chunks"]["response_bytes"] == 20
    assert by_route["/cards/{card_id}"]["kind"] == "http"
    assert by_route["/poll"]["kind"] == "stream"
    for record in by_route.values():
        validate_record(record)


def test_websocket_connection_is_one_record() -> None:
    app, records = middleware()
    inbox: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.receive", "text": "héllo"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"shop")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "scheme": "ws",
    }
    asyncio.run(app(scope, receive, send))
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["HELLO", "HÉLLO"]
    (record,) = [r for r in records if r["kind"] == "websocket"]
    validate_record(record)
    assert (record["route"], record["method"], record["status"]) == ("/ws", "WS", 1001)
    assert (record["messages_in"], record["messages_out"]) == (2, 2)
    assert record["request_bytes"] == len(b"hello") + len("héllo".encode())
    assert record["response_bytes"] == len(b"HELLO") + len("HÉLLO".encode())


def test_monitoring_off_passes_through_but_control_is_served() -> None:
    app, records = middleware()
    app.monitor.configure(enabled=False)
    response = asyncio.run(fetch(app, "GET", "/cards/1"))
    assert "server-timing" not in response.headers
    assert http_records(records) == []
    response = asyncio.run(
        fetch(app, "POST", "/api/performance-metrics/control", json={"enabled": True})
    )
    assert response.status_code == 200
    assert app.monitor.enabled


def test_perfnb_endpoints_are_recorded_as_perfnb_traffic() -> None:
    app, records = middleware()
    asyncio.run(fetch(app, "GET", "/api/performance-metrics/control"))
    asyncio.run(fetch(app, "GET", "/api/performance-metrics/wp-login.php"))
    own = [r for r in http_records(records) if r["source"] == "perfnb"]
    assert [r["route"] for r in own][:1] == ["/api/performance-metrics/control"]
    assert all(r["route"].startswith("/api/performance-metrics") for r in own)
    assert not [r for r in http_records(records) if r["source"] == "server"]


def test_process_and_overhead_records_come_with_requests() -> None:
    app, records = middleware()

    async def run() -> None:
        for _ in range(40):
            await fetch(app, "GET", "/cards/1")
        app.recorder.tick_ns = 0  # the next request finds the second over
        await fetch(app, "GET", "/cards/1")
        await asyncio.sleep(0)  # the loop-lag probe runs on the next turn

    asyncio.run(run())
    names = {r["name"] for r in records if r["kind"] == "process"}
    assert {"rss_bytes", "threads", "open_files", "loop_lag_ms"} <= names
    (overhead,) = [r for r in records if r["kind"] == "overhead"]
    validate_record(overhead)
    assert overhead["source"] == "perfnb"
    assert overhead["value"] > 0
    assert int(overhead["tags"]["requests"]) == 40


def test_distinct_routes_are_bounded() -> None:
    app, records = middleware(max_routes=1)

    async def run() -> None:
        await fetch(app, "GET", "/cards/1")
        await fetch(app, "GET", "/sse")

    asyncio.run(run())
    assert [r["route"] for r in http_records(records)] == ["/cards/{card_id}", "<other>"]


def test_session_cookie_keys_the_client_by_its_hash() -> None:
    app, records = middleware(session_cookie="sid")

    async def run() -> None:
        await fetch(app, "GET", "/cards/1", headers={"Cookie": "a=1; sid=secret-token"})
        await fetch(app, "GET", "/cards/1", headers={"Cookie": "sid=secret-token"})
        await fetch(app, "GET", "/cards/1", headers={"Cookie": "sid=other"})

    asyncio.run(run())
    keys = [r["client"] for r in http_records(records)]
    assert keys[0] == keys[1] != keys[2]
    assert all("secret" not in key for key in keys)


def test_lifespan_passes_through_and_closes_the_monitor() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    wrapped = PerfnbMiddleware(app)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return inbox.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    asyncio.run(wrapped({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert wrapped.monitor.closed


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="monitor"):
        PerfnbMiddleware(make_app(), monitor=Monitor(), sink=print)
    with pytest.raises(ConfigError, match="session_cookie"):
        PerfnbMiddleware(make_app(), session_cookie="bad name")
    with pytest.raises(ConfigError, match="max_routes"):
        PerfnbMiddleware(make_app(), max_routes=0)


def test_add_middleware_works_too() -> None:
    records: list[Record] = []
    app = make_app()
    app.add_middleware(PerfnbMiddleware, sink=records.append)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            response = await client.get("/cards/3")
        await asyncio.sleep(0)  # the batch is written on the next loop turn
        return response

    response = asyncio.run(run())
    assert "perfnb" in response.headers["server-timing"]
    assert [r["route"] for r in http_records(records)] == ["/cards/{card_id}"]


def test_server_package_imports_neither_pandas_nor_pyarrow() -> None:
    code = (
        "import sys, perfnb.server, perfnb.server.asgi, perfnb.server.wsgi, "
        "perfnb.server.sqlalchemy, perfnb.server.feed\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'pyarrow'))\n"
        "print(','.join(bad))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


def test_records_built_when_read_match_those_given_to_a_sink() -> None:
    with_sink, records = middleware()
    ring_only = PerfnbMiddleware(make_app(), service="shop")
    assert ring_only.monitor.direct

    async def run(app: PerfnbMiddleware) -> None:
        await fetch(app, "GET", "/cards/5", headers={"X-Perfnb-Run": "run-1"})
        await fetch(app, "GET", "/chunks")
        await fetch(app, "GET", "/boom")
        await fetch(app, "POST", "/upload", content=b"x" * 10)
        await fetch(app, "GET", "/nowhere")

    asyncio.run(run(with_sink))
    asyncio.run(run(ring_only))
    volatile = {"time", "duration_ms", "ttfb_ms", "client"}

    def stable(recs: list[Record]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k not in volatile} for r in http_records(recs)]

    built = ring_only.monitor.buffer.latest(100)
    for rec in http_records(built):
        validate_record(rec)
    assert stable(built) == stable(records)
    # the same columns in the same order, so the wire form is the same too
    assert [list(r) for r in http_records(built)] == [list(r) for r in http_records(records)]
    assert [r["kind"] for r in http_records(built)] == ["http", "stream", "http", "http", "http"]
