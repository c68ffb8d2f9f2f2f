"""Targets that misbehave: one that hangs, one that drops connections, one that closes
idle keep-alive connections. Each is a small raw HTTP/1.1 server on 127.0.0.1, so the
test controls exactly when bytes are sent and connections close.

- A target that stops answering trips ``max_p95_ms`` while it hangs (requests in
  flight count by their age), within the window plus 1 s.
- A failed request carries its real elapsed time, kept apart from the success
  latency, and a run where everything failed does not call itself reliable.
- A request on a keep-alive connection the server closed before answering is sent
  once more on a fresh connection (idempotent methods only) and counted as a
  reconnect, not an error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from perfnb.load import (
    ConstantRate,
    Endpoint,
    Endpoints,
    Journey,
    Limits,
    Session,
    Users,
    run_load,
)

pytestmark = pytest.mark.slow

LOOPS = [pytest.param(True, id="uvloop"), pytest.param(False, id="asyncio")]
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A raw asyncio HTTP server on a thread; ``handler`` serves each connection."""

    handler: Handler
    url: str = ""
    requests: int = 0  # request heads read
    connections: int = 0
    hang: bool = False
    release: asyncio.Event | None = None
    stopping: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request head (the tests send no bodies), or b"" at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
        self.requests += 1
        return head


@pytest.fixture
def raw_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    server = RawServer(request.param)
    ready = threading.Event()

    async def main() -> None:
        server.release = asyncio.Event()
        server.stopping = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server.connections += 1
            try:
                await server.handler(server, reader, writer)
            except ConnectionError:
                pass
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        server.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        ready.set()
        async with srv:
            await server.stopping.wait()
        # let the handlers see their connections end
        await asyncio.sleep(0.05)

    thread = threading.Thread(target=server.loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server
    finally:
        for event in (server.release, server.stopping):
            if event is not None:
                server.loop.call_soon_threadsafe(event.set)
        thread.join(timeout=10)
        server.loop.close()


async def answer_until_hang(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer each request at once, until ``hang`` is set: then answer nothing."""
    while await server.read_request(reader):
        if server.hang:
            assert server.release is not None
            await server.release.wait()
            return
        writer.write(_OK)
        await writer.drain()


async def drop_after_200ms(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read the request, wait 200 ms, close without a byte of answer."""
    if await server.read_request(reader):
        await asyncio.sleep(0.2)


async def one_answer_per_connection(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer the first request as keep-alive, then close on the next one unanswered.

    The client's second request and the server's close cross, as when a server's
    keep-alive timeout ends just as a client reuses the connection.
    """
    if await server.read_request(reader):
        writer.write(_OK)
        await writer.drain()
        await server.read_request(reader)


async def one_get(session: Session) -> None:
    """A journey of one request."""
    await session.get("/")


@pytest.mark.parametrize("raw_server", [answer_until_hang], indirect=True)
@pytest.mark.parametrize("use_uvloop", LOOPS)
@pytest.mark.parametrize(
    "scenario",
    [Endpoints([Endpoint("GET", "/")]), Journey(one_get, timeout=30)],
    ids=["endpoints", "journey"],
)
def test_a_hanging_target_trips_the_latency_limit_while_it_hangs(
    raw_server: RawServer, use_uvloop: bool, scenario: Endpoints | Journey
) -> None:
    hang_at = 2.0
    window = 5.0
    timer = threading.Timer(hang_at, lambda: setattr(raw_server, "hang", True))
    timer.start()
    try:
        result = run_load(
            raw_server.url,
            scenario,
            ConstantRate(200, duration=25),
            workers=1,
            limits=Limits(max_p95_ms=100, error_window=window),
            use_uvloop=use_uvloop,
        )
    finally:
        timer.cancel()
    assert result.stop.reason == "p95_latency", result.stop.message
    assert result.stop.elapsed <= hang_at + window + 1.0
    assert result.stop.figures["inflight"] > 0
    assert "still waiting" in result.stop.message


@pytest.mark.parametrize("raw_server", [drop_after_200ms], indirect=True)
def test_failed_requests_carry_their_real_elapsed_time(raw_server: RawServer) -> None:
    result = run_load(
        raw_server.url,
        Endpoints([Endpoint("GET", "/")]),
        Users(4, duration=1.0),
        workers=1,
    )
    total = result.total
    assert total.count > 0
    assert set(total.error_types) == {"closed"}
    assert 190 <= total.failed_p50_ms <= 1000
    # no request succeeded: the success latency is empty, not 0 ms of "fast" failures
    assert total.p50_ms == 0.0
    assert result.latency.count == 0
    assert not result.reliable
    assert any("every request failed" in r for r in result.unreliable_reasons)


def test_a_refused_port_fails_with_its_time_and_is_not_reliable() -> None:
    import socket

    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_load(
        f"http://127.0.0.1:{port}",
        Endpoints([Endpoint("GET", "/")]),
        ConstantRate(50, duration=1.0),
        workers=1,
    )
    assert result.total.count > 0
    assert set(result.total.error_types) == {"connect"}
    assert result.latency.count == 0
    assert not result.reliable


@pytest.mark.parametrize("raw_server", [one_answer_per_connection], indirect=True)
@pytest.mark.parametrize("use_uvloop", LOOPS)
def test_a_stale_keep_alive_request_is_retried_once_as_a_reconnect(
    raw_server: RawServer, use_uvloop: bool
) -> None:
    result = run_load(
        raw_server.url,
        Endpoints([Endpoint("GET", "/")]),
        Users(2, duration=1.0),
        workers=1,
        use_uvloop=use_uvloop,
    )
    assert result.total.count > 20
    assert result.total.errors == 0
    # every request after a connection's first met the close and went again
    assert result.reconnects >= result.total.count - 2 - 1
    assert f"reconnects {result.reconnects}" in result.table()


@pytest.mark.parametrize("raw_server", [one_answer_per_connection], indirect=True)
def test_a_stale_keep_alive_post_is_not_sent_twice(raw_server: RawServer) -> None:
    result = run_load(
        raw_server.url,
        Endpoints([Endpoint("POST", "/orders", body=b"{}")]),
        Users(1, duration=1.0),
        workers=1,
    )
    # a POST may have done its work before the close: it fails, it is not repeated
    assert result.total.error_types.get("closed", 0) > 0
    assert result.reconnects == 0
    # the server read each request once: the answered ones and the failed ones
    assert raw_server.requests >= result.total.count


@pytest.mark.parametrize("raw_server", [one_answer_per_connection], indirect=True)
def test_open_model_retries_stale_connections_too(raw_server: RawServer) -> None:
    result = run_load(
        raw_server.url,
        Endpoints([Endpoint("GET", "/")]),
        ConstantRate(100, duration=1.5),
        workers=1,
    )
    assert result.total.count > 100
    assert result.total.errors == 0
    assert result.reconnects > 0
