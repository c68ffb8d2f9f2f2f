"""Fixtures of the load tests: the target app of ``load_target`` on a real uvicorn."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from load_target import TargetApp, wait_for


@pytest.fixture
def target() -> Iterator[TargetApp]:
    """The target app served on uvicorn in a background thread."""
    app = TargetApp()
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it
    # Nagle and delayed ACKs add 40 ms to every response after the first
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", http="httptools", loop="asyncio", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
    app.url = f"http://127.0.0.1:{port}"
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
