"""Nothing breaks: Starlette and FastAPI apps on uvicorn, with and without the middleware.

Every response is read byte for byte with a raw HTTP/1.1 client; apart from the
``Date`` and ``Server-Timing`` lines, the bytes must be the same whether the
middleware is installed or not — gzip inside and outside it, ETag/304, HEAD,
range requests on files, background tasks, exception handlers, streaming.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import FileResponse as FastFileResponse
from mw_support import raw_request, serve_asgi, server_timing, split, wait_for
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from perfnb.schema import Record
from perfnb.server import PerfnbMiddleware

pytestmark = pytest.mark.slow

BIG = ("perfnb " * 400).encode()


class Teapot(Exception):
    pass


def starlette_app(data: Path, *, gzip_inside: bool) -> Starlette:
    log: list[str] = []
    released = asyncio.Event()

    async def plain(request: Request) -> Response:
        return PlainTextResponse("hello")

    async def json(request: Request) -> Response:
        return JSONResponse({"a": [1, 2, 3], "b": "ü"})

    async def big(request: Request) -> Response:
        return Response(BIG, media_type="text/plain")

    async def etag(request: Request) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers={"ETag": '"v1"'})
        return PlainTextResponse("versioned", headers={"ETag": '"v1"'})

    async def file(request: Request) -> Response:
        return FileResponse(data)

    async def background(request: Request) -> Response:
        return PlainTextResponse("queued", background=BackgroundTask(log.append, "done"))

    async def bg_log(request: Request) -> Response:
        return PlainTextResponse(",".join(log))

    async def teapot(request: Request) -> Response:
        raise Teapot

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    async def stream(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for index in range(3):
                yield f"part {index}\n".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    async def sse(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            for index in range(3):
                yield f"event: tick\ndata: {index}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def held(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            yield b"first\n"
            await released.wait()
            yield b"second\n"

        return StreamingResponse(parts(), media_type="text/plain")

    async def release(request: Request) -> Response:
        released.set()
        return PlainTextResponse("released")

    async def on_teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("short and stout", status_code=418)

    app = Starlette(
        routes=[
            Route("/plain", plain, methods=["GET", "HEAD"]),
            Route("/json", json),
            Route("/big", big),
            Route("/etag", etag),
            Route("/file", file),
            Route("/background", background),
            Route("/bg-log", bg_log),
            Route("/teapot", teapot),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            Route("/sse", sse),
            Route("/held", held),
            Route("/release", release),
        ],
        exception_handlers={Teapot: on_teapot},
    )
    if gzip_inside:
        app.add_middleware(GZipMiddleware, minimum_size=100)
    return app


def fastapi_app(data: Path) -> FastAPI:
    app = FastAPI()
    log: list[str] = []

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": f"item {item_id}"}

    @app.post("/items")
    async def create(payload: dict[str, Any]) -> dict[str, Any]:
        return {"created": payload}

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/bg")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(log.append, "done")
        return {"queued": "yes"}

    @app.get("/bg-log")
    async def bg_log() -> dict[str, list[str]]:
        return {"log": log}

    @app.get("/file")
    async def file() -> FastFileResponse:
        return FastFileResponse(data)

    @app.get("/sync")
    def sync() -> dict[str, str]:
        return {"thread": "pool"}

    return app


def _compare(
    plain_port: int,
    perfnb_port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    without = raw_request(plain_port, method, path, headers, body)
    with_mw = raw_request(perfnb_port, method, path, headers, body)
    assert split(with_mw) == split(without), f"{method} {path} {headers}"
    assert server_timing(without) == []
    (timing,) = server_timing(with_mw)
    assert timing.startswith(b"app;dur=")
    assert b"perfnb;dur=" in timing
    return with_mw


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.fixture(scope="module")
def gzip_inside(data_file: Path) -> Iterator[tuple[int, int, list[Record]]]:
    records: list[Record] = []
    plain = starlette_app(data_file, gzip_inside=True)
    monitored = PerfnbMiddleware(starlette_app(data_file, gzip_inside=True), sink=records.append)
    with serve_asgi(plain) as plain_port, serve_asgi(monitored) as perfnb_port:
        yield plain_port, perfnb_port, records


@pytest.fixture(scope="module")
def gzip_outside(data_file: Path) -> Iterator[tuple[int, int]]:
    plain = GZipMiddleware(starlette_app(data_file, gzip_inside=False), minimum_size=100)
    monitored = GZipMiddleware(
        PerfnbMiddleware(starlette_app(data_file, gzip_inside=False)), minimum_size=100
    )
    with serve_asgi(plain) as plain_port, serve_asgi(monitored) as perfnb_port:
        yield plain_port, perfnb_port


@pytest.fixture(scope="module")
def fastapi_ports(data_file: Path) -> Iterator[tuple[int, int, list[Record]]]:
    records: list[Record] = []
    plain = fastapi_app(data_file)
    monitored = PerfnbMiddleware(fastapi_app(data_file), sink=records.append)
    with serve_asgi(plain) as plain_port, serve_asgi(monitored) as perfnb_port:
        yield plain_port, perfnb_port, records


STARLETTE_REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/plain", {}, b""),
    ("HEAD", "/plain", {}, b""),
    ("GET", "/json", {}, b""),
    ("GET", "/big", {"Accept-Encoding": "gzip"}, b""),
    ("GET", "/big", {}, b""),
    ("GET", "/etag", {}, b""),
    ("GET", "/etag", {"If-None-Match": '"v1"'}, b""),
    ("GET", "/file", {}, b""),
    ("GET", "/file", {"Range": "bytes=10-19"}, b""),
    ("GET", "/file", {"Range": "bytes=-5"}, b""),
    ("GET", "/file", {"Range": "bytes=99999-"}, b""),
    ("HEAD", "/file", {}, b""),
    ("GET", "/teapot", {}, b""),
    ("POST", "/echo", {}, b"\x00\x01binary body\xff"),
    ("GET", "/stream", {}, b""),
    ("GET", "/stream", {"Accept-Encoding": "gzip"}, b""),
    ("GET", "/sse", {}, b""),
    ("GET", "/missing", {}, b""),
    ("DELETE", "/plain", {}, b""),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), STARLETTE_REQUESTS)
def test_starlette_gzip_inside_bytes_unchanged(
    gzip_inside: tuple[int, int, list[Record]],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    plain_port, perfnb_port, _ = gzip_inside
    _compare(plain_port, perfnb_port, method, path, headers, body)


@pytest.mark.parametrize(("method", "path", "headers", "body"), STARLETTE_REQUESTS)
def test_starlette_gzip_outside_bytes_unchanged(
    gzip_outside: tuple[int, int],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    plain_port, perfnb_port = gzip_outside
    _compare(plain_port, perfnb_port, method, path, headers, body)


def test_background_tasks_still_run(gzip_inside: tuple[int, int, list[Record]]) -> None:
    plain_port, perfnb_port, _ = gzip_inside
    _compare(plain_port, perfnb_port, "GET", "/background")
    for port in (plain_port, perfnb_port):
        wait_for(lambda port=port: raw_request(port, "GET", "/bg-log").endswith(b"done"))


def test_streaming_stays_streaming(gzip_inside: tuple[int, int, list[Record]]) -> None:
    _, perfnb_port, records = gzip_inside
    with socket.create_connection(("127.0.0.1", perfnb_port), timeout=15) as conn:
        conn.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while b"first" not in received:
            chunk = conn.recv(65536)
            assert chunk, "the stream ended before its first part"
            received += chunk
        # The first part arrived while the handler still waits: nothing was buffered.
        assert b"second" not in received
        raw_request(perfnb_port, "GET", "/release")
        while chunk := conn.recv(65536):
            received += chunk
    assert b"second" in received
    wait_for(lambda: any(r.get("route") == "/held" for r in records))
    (held,) = [r for r in records if r.get("route") == "/held"]
    assert held["kind"] == "stream"
    assert held["ttfb_ms"] < held["duration_ms"]


def test_records_of_the_starlette_app(gzip_inside: tuple[int, int, list[Record]]) -> None:
    _plain_port, perfnb_port, records = gzip_inside
    for method, path, headers, body in STARLETTE_REQUESTS:
        raw_request(perfnb_port, method, path, headers, body)
    wait_for(lambda: any(r.get("route") == "/echo" for r in records))
    routes = {r["route"] for r in records if r["kind"] in ("http", "stream")}
    assert {"/plain", "/json", "/big", "/etag", "/file", "/teapot", "/echo"} <= routes
    assert "<unmatched>" in routes
    assert "/missing" not in routes
    statuses = {(r["route"], r["status"]) for r in records if r["kind"] == "http"}
    assert ("/etag", 304) in statuses
    assert ("/file", 206) in statuses
    assert ("/teapot", 418) in statuses
    by_kind = {r["route"]: r["kind"] for r in records if r.get("route") in ("/sse", "/stream")}
    assert by_kind == {"/sse": "stream", "/stream": "stream"}


FASTAPI_REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/items/5", {}, b""),
    ("GET", "/items/not-a-number", {}, b""),
    ("HEAD", "/items/5", {}, b""),
    ("POST", "/items", {"Content-Type": "application/json"}, b'{"name": "x"}'),
    ("POST", "/items", {"Content-Type": "application/json"}, b"{broken"),
    ("GET", "/teapot", {}, b""),
    ("GET", "/file", {"Range": "bytes=0-9"}, b""),
    ("GET", "/sync", {}, b""),
    ("GET", "/docs", {}, b""),
    ("GET", "/openapi.json", {}, b""),
    ("GET", "/nowhere", {}, b""),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), FASTAPI_REQUESTS)
def test_fastapi_bytes_unchanged(
    fastapi_ports: tuple[int, int, list[Record]],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    plain_port, perfnb_port, _ = fastapi_ports
    _compare(plain_port, perfnb_port, method, path, headers, body)


def test_fastapi_records_and_background(fastapi_ports: tuple[int, int, list[Record]]) -> None:
    plain_port, perfnb_port, records = fastapi_ports
    _compare(plain_port, perfnb_port, "GET", "/bg")
    for port in (plain_port, perfnb_port):
        wait_for(lambda port=port: b'"done"' in raw_request(port, "GET", "/bg-log"))
    raw_request(perfnb_port, "GET", "/items/77", {"X-Perfnb-Run": "load-1"})
    wait_for(lambda: any(r.get("run_id") == "load-1" for r in records))
    (loaded,) = [r for r in records if r.get("run_id") == "load-1"]
    assert (loaded["route"], loaded["status"]) == ("/items/{item_id}", 200)
    assert any(r["route"] == "/sync" for r in records if r["kind"] == "http")
