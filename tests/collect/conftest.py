"""A real Starlette app on uvicorn (127.0.0.1, a free port) that writes Server-Timing."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TIMING = 'db;dur=1.25, app;dur=4.5;desc="handler"'


async def card(request: Request) -> JSONResponse:
    # really spend the 4.5 ms the header claims, so the client's duration can hold it
    await asyncio.sleep(0.005)
    return JSONResponse({"card": request.path_params["card_id"]}, headers={"Server-Timing": TIMING})


async def chunks(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 1000
            await asyncio.sleep(0.01)  # separate chunks on the wire

    return StreamingResponse(body(), headers={"Server-Timing": "app;dur=0.5"})


async def echo(request: Request) -> Response:
    return Response(await request.body(), headers={"Server-Timing": "app;dur=0.1"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(5)
    return Response("late")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/cards/{card_id}", card),
            Route("/chunks", chunks),
            Route("/echo", echo, methods=["POST"]),
            Route("/slow", slow),
        ]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app's base URL; served from a thread for the whole test module."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start within 20 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=20)
        sock.close()
