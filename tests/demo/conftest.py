"""The demo app on a real uvicorn on 127.0.0.1, in a subprocess or in a thread.

Fixtures:

- ``demo``: one demo-app process per test module (``python -m perfnb.demo``), a
  free port, a throwaway database; its fault switches are reset before each test.
- ``serve``: a context manager factory that serves an ASGI app built in the test
  (so the test can hold its monitor) on uvicorn in a background thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from perfnb.demo.process import DemoAppProcess


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class DemoProcess(DemoAppProcess):
    """The demo app in a child process, with client helpers for tests."""

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)

    def guest(self, **kw: Any) -> httpx.Client:
        """A client signed in as a fresh guest."""
        with self.client(**kw) as first:
            response = first.post("/api/guests", json={"name": "tester"})
            assert response.status_code == 201, response.text
            cookies = dict(first.cookies)
        return self.client(cookies=cookies, **kw)


def start_demo(tmp: Path, *extra: str) -> DemoProcess:
    """Start ``python -m perfnb.demo`` on a free port and wait until it answers."""
    demo = DemoProcess(db=tmp / "demo.sqlite3", log=tmp / "demo-app.log", args=extra)
    demo.start()
    return demo


def stop_demo(demo: DemoProcess) -> None:
    demo.stop()


@pytest.fixture(scope="module")
def demo_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    demo = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        yield demo
    finally:
        stop_demo(demo)


@pytest.fixture
def demo(demo_process: DemoProcess) -> DemoProcess:
    with demo_process.client() as client:
        assert client.delete("/api/admin/faults").status_code == 200
    return demo_process


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` on uvicorn in a thread, on a socket bound here (no port race)."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response after the first waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def serve() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    return serve_in_thread


@pytest.fixture
def waiter() -> Callable[..., None]:
    """``waiter(predicate, timeout=…, what=…)``: poll with a deadline."""
    return wait_for


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[Callable[..., DemoProcess]]:
    """Start extra demo-app processes (with CLI options); all stopped after the test."""
    started: list[DemoProcess] = []

    def start(*extra: str) -> DemoProcess:
        home = tmp_path / f"demo-{len(started)}"
        home.mkdir()
        demo = start_demo(home, *extra)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        stop_demo(demo)
