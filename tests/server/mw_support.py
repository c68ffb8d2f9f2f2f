"""Helpers of the middleware tests: real servers on 127.0.0.1 and a raw HTTP/1.1 client.

The raw client reads responses byte for byte (no decompression, no re-framing),
so responses served with and without the middleware can be compared exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn

#: Header lines that legitimately differ between two runs.
VOLATILE = (b"date:", b"server-timing:")


@contextlib.contextmanager
def serve_asgi(app: Callable[..., Any]) -> Iterator[int]:
    """Run ``app`` under uvicorn (httptools) on 127.0.0.1 and a free port; yield the port."""
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="error", lifespan="auto", http="httptools")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: Callable[..., Any]) -> Iterator[int]:
    """Run ``app`` under the standard library's wsgiref server in a thread; yield the port."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=15)
        server.server_close()


def raw_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """Send one request with ``Connection: close`` and return the response bytes as sent."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(data)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def split(response: bytes) -> tuple[list[bytes], bytes]:
    """Status line and header lines (volatile ones removed), and the body as framed."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(VOLATILE)]
    return kept, body


def server_timing(response: bytes) -> list[bytes]:
    """The Server-Timing header values of a raw response."""
    head = response.partition(b"\r\n\r\n")[0]
    return [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"server-timing:")
    ]


def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)
