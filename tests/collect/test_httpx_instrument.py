from __future__ import annotations

import asyncio
import doctest
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfnb.collect.httpx as hx
from perfnb.collect import parse_server_timing
from perfnb.collect.httpx import (
    default_route,
    instrument,
    instrumentation,
    split_server_time,
    uninstrument,
)
from perfnb.errors import ConfigError
from perfnb.schema import Record, validate_record
from perfnb.stream import Stream


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"Server-Timing": 'db;dur=2.5, app;dur=6;desc="handler"'},
        text="hello",
    )


def client_with(handler: Any, records: list[Record], **kw: Any) -> httpx.Client:
    return instrument(
        httpx.Client(transport=httpx.MockTransport(handler)), sink=records.append, **kw
    )


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that arrives in pieces, like a real transport's."""

    def __init__(self, *chunks: bytes, fail: BaseException | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail is not None:
            raise self.fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


# -- pure logic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/", "/"),
        ("", ""),
        ("/api/cards", "/api/cards"),
        ("/api/cards/42", "/api/cards/{id}"),
        ("/api/cards/42/comments/7", "/api/cards/{id}/comments/{id}"),
        ("/u/9f8c2d4e-1b7a-4c3e-9d2f-0a1b2c3d4e5f", "/u/{id}"),
        ("/u/9f8c2d4e1b7a4c3e9d2f0a1b2c3d4e5f", "/u/{id}"),
        ("/blob/0123456789abcdef0123", "/blob/{id}"),
        ("/s/aB3dE5gH7jK9mN1pQ3sT5", "/s/{id}"),
        ("/docs/getting-started-with-perfnb", "/docs/getting-started-with-perfnb"),
        ("/v2/items", "/v2/items"),
        ("/static/app.3f9a.js", "/static/app.3f9a.js"),
        ("/a/" + "x" * 500, ("/a/" + "x" * 500)[:256]),
    ],
)
def test_default_route(path: str, route: str) -> None:
    assert default_route(path) == route


@pytest.mark.parametrize(
    ("header", "duration", "expected"),
    [
        ("", 10.0, (None, None, None)),
        ("app;dur=5", 10.0, (5.0, 5.0, None)),
        ("db;dur=2, app;dur=5", 10.0, (5.0, 5.0, 2.0)),
        ("total;dur=8, app;dur=5, db;dur=2", 10.0, (8.0, 5.0, 2.0)),
        ("db;dur=3", 10.0, (3.0, None, 3.0)),
        # other servers' names: the largest, since metrics nest
        ("sql.active_record;dur=3, process_action;dur=9", 10.0, (9.0, None, None)),
        # the server cannot take longer than the client waited
        ("app;dur=50", 10.0, (10.0, 50.0, None)),
        ("app;dur=50", None, (50.0, 50.0, None)),
        # zero and negative durations say nothing
        ("cache;desc=hit, edge;dur=0", 10.0, (None, None, None)),
        ("app;dur=-5, total;dur=0, db;dur=1", 10.0, (1.0, None, 1.0)),
        # the first of duplicates
        ("app;dur=4, app;dur=7", 10.0, (4.0, 4.0, None)),
    ],
)
def test_split_server_time(
    header: str,
    duration: float | None,
    expected: tuple[float | None, float | None, float | None],
) -> None:
    assert split_server_time(parse_server_timing(header), duration) == expected


# Header values near the common shape exercise the client's direct reading of it.
_PIECES = ["app", "db", "total", "x", ";dur=", ";desc=", ";DUR=", "1.5", "0", "-2", "7", "1e3"]
_PIECES += [",", ", ", " ", '"', '"h i"', "\\", "=", ";"]


@given(st.lists(st.sampled_from(_PIECES), max_size=16).map("".join), st.floats(0, 50))
@settings(max_examples=500)
def test_split_header_agrees_with_parse_and_split(header: str, duration: float) -> None:
    expected = split_server_time(parse_server_timing(header), duration)
    assert hx._split_header(header, duration) == expected


# -- records from a mock transport -------------------------------------------------------


def test_one_record_per_request_with_every_field() -> None:
    records: list[Record] = []
    before = datetime.now(UTC)
    with client_with(ok, records) as client:
        response = client.post("http://127.0.0.1:9/api/cards/42?q=1", content=b"12345")
    assert response.text == "hello"
    assert len(records) == 1
    record = validate_record(records[0])
    assert before - timedelta(seconds=1) <= record["time"] <= datetime.now(UTC)
    assert record["source"] == "client"
    assert record["kind"] == "http"
    assert record["service"] == "127.0.0.1:9"
    assert record["route"] == "/api/cards/{id}"
    assert record["method"] == "POST"
    assert record["status"] == 200
    assert record["request_bytes"] == 5
    assert record["response_bytes"] == 5
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]
    assert record["app_ms"] == 6.0
    assert record["db_ms"] == 2.5
    assert record["server_ms"] == min(6.0, record["duration_ms"])
    assert "error_type" not in record
    assert "run_id" not in record


def test_service_route_and_run_id_options() -> None:
    records: list[Record] = []

    def templates(path: str) -> str:
        return "/api/cards/{card_id}" if path.startswith("/api/cards/") else "{unmatched}"

    with client_with(ok, records, service="demo", route=templates) as client:
        client.get("https://example.test/api/cards/abc", headers={"X-Perfnb-Run": "run-7"})
        client.get("https://example.test/wp-login.php")
    assert [r["route"] for r in records] == ["/api/cards/{card_id}", "{unmatched}"]
    assert {r["service"] for r in records} == {"demo"}
    assert records[0]["run_id"] == "run-7"
    assert records[0]["request_bytes"] == 0
    assert "run_id" not in records[1]


def test_a_raising_route_function_does_not_break_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records: list[Record] = []

    def broken(path: str) -> str:
        raise KeyError(path)

    with client_with(ok, records, route=broken) as client:
        assert client.get("http://x.test/a").status_code == 200
    assert records[0]["route"] == "{unmatched}"
    assert "route function" in caplog.text


def test_a_raising_sink_does_not_break_requests(caplog: pytest.LogCaptureFixture) -> None:
    def sink(record: Record) -> None:
        raise RuntimeError("disk full")

    client = instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=sink)
    with client:
        for _ in range(3):
            assert client.get("http://x.test/").text == "hello"
    inst = instrumentation(client)
    assert inst is not None
    assert inst.sink_errors == 3
    assert inst.records == 0
    logged = [r for r in caplog.records if "refused a client record" in r.getMessage()]
    assert len(logged) == 1  # logged once, counted always


def test_streamed_body_is_timed_to_the_last_byte() -> None:
    records: list[Record] = []
    body = Chunks(b"ab", b"cde", b"f")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Server-Timing": "app;dur=1"}, stream=body)

    with client_with(handler, records) as client, client.stream("GET", "http://x.test/f") as r:
        seen = []
        for chunk in r.iter_raw():
            seen.append(chunk)
            assert records == []  # no record before the last byte
        assert b"".join(seen) == b"abcdef"
        assert len(records) == 1
    assert len(records) == 1
    assert records[0]["response_bytes"] == 6
    assert records[0]["ttfb_ms"] <= records[0]["duration_ms"]
    assert body.closed


def test_an_abandoned_body_is_recorded_on_close() -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(b"ab", b"cd", b"ef"))

    with client_with(handler, records) as client:
        with client.stream("GET", "http://x.test/big") as response:
            for _chunk in response.iter_raw():
                break
            assert records == []
        assert len(records) == 1
    assert records[0]["response_bytes"] == 2
    assert "error_type" not in records[0]


def test_server_sent_events_are_streams() -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Chunks(b"data: 1\n\n")
        )

    with client_with(handler, records) as client:
        client.get("http://x.test/events")
    assert records[0]["kind"] == "stream"


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (httpx.ConnectTimeout("timed out"), "timeout"),
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.PoolTimeout("no connection"), "timeout"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connect"),
        (httpx.ReadError("connection reset"), "network"),
        (httpx.RemoteProtocolError("bad status line"), "protocol"),
        (httpx.ProxyError("proxy said no"), "proxy"),
        (ValueError("odd"), "ValueError"),
    ],
)
def test_errors_become_records_and_are_reraised(exc: Exception, error_type: str) -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with client_with(handler, records) as client, pytest.raises(type(exc)) as info:
        client.get("http://x.test/api/cards/1")
    assert info.value is exc
    assert len(records) == 1
    record = validate_record(records[0])
    assert record["error_type"] == error_type
    assert record["status"] == 0
    assert str(exc) in record["error_message"]
    assert type(exc).__name__ in record["error_message"]
    assert "response_bytes" not in record
    assert "ttfb_ms" not in record


def test_an_error_in_the_body_is_recorded_with_the_status() -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunks(b"abc", fail=httpx.ReadTimeout("body timed out")))

    with client_with(handler, records) as client, pytest.raises(httpx.ReadTimeout):
        client.get("http://x.test/slow-body")
    assert len(records) == 1
    assert records[0]["status"] == 200
    assert records[0]["error_type"] == "timeout"
    assert records[0]["response_bytes"] == 3


SECRET = "s3cr3t-T0ken-value"


def test_secrets_are_never_recorded() -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        # an error message that repeats everything it was given
        raise httpx.ConnectError(f"failed {request.url} with {dict(request.headers)}")

    client = client_with(handler, records)
    client.cookies.set("session", SECRET + "-cookie")
    with client, pytest.raises(httpx.ConnectError):
        client.get(
            f"http://user:{SECRET}-pw@x.test/api/cards/1?api_key={SECRET}-q",
            headers={
                "Authorization": f"Bearer {SECRET}-auth",
                "X-Api-Key": SECRET + "-key",
                "Proxy-Authorization": f"Basic {SECRET}-proxy",
            },
        )
    assert len(records) == 1
    text = repr(records[0])
    assert SECRET not in text
    assert "http://x.test/api/cards/1" in records[0]["error_message"]
    assert "[redacted]" in records[0]["error_message"]


def test_redirect_hops_are_recorded_each() -> None:
    records: list[Record] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(302, headers={"Location": "/new"})
        return ok(request)

    with client_with(handler, records) as client:
        assert client.get("http://x.test/old", follow_redirects=True).status_code == 200
    assert [(r["route"], r["status"]) for r in records] == [("/old", 302), ("/new", 200)]


def test_mounted_transports_are_instrumented() -> None:
    records: list[Record] = []
    other = httpx.MockTransport(lambda request: httpx.Response(201))
    client = httpx.Client(transport=httpx.MockTransport(ok), mounts={"http://other.test": other})
    instrument(client, sink=records.append)
    with client:
        client.get("http://x.test/")
        client.get("http://other.test/")
    assert [(r["service"], r["status"]) for r in records] == [("x.test", 200), ("other.test", 201)]
    uninstrument(client)
    assert client._mounts[next(iter(client._mounts))] is other


def test_records_fit_a_stream() -> None:
    stream = Stream()
    with instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=stream.push) as client:
        for i in range(5):
            client.get(f"http://x.test/api/cards/{i}")
    frame = stream.frame()
    assert len(frame) == 5
    assert set(frame["route"]) == {"/api/cards/{id}"}
    assert stream.stats["rejected"] == 0


def test_instrument_and_uninstrument() -> None:
    records: list[Record] = []
    transport = httpx.MockTransport(ok)
    client = httpx.Client(transport=transport)
    assert instrumentation(client) is None
    assert instrument(client, sink=records.append) is client
    with pytest.raises(ConfigError, match="already instrumented"):
        instrument(client, sink=records.append)
    uninstrument(client)
    assert client._transport is transport
    assert instrumentation(client) is None
    uninstrument(client)  # a no-op the second time
    with client:
        client.get("http://x.test/")
    assert records == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"client": object()}, "client: got object"),
        ({"sink": "not callable"}, "sink"),
        ({"route": "/fixed"}, "route"),
        ({"service": 3}, "service"),
    ],
)
def test_instrument_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"client": httpx.Client(), "sink": print, **kwargs}
    client = args.pop("client")
    with pytest.raises(ConfigError, match=match):
        instrument(client, **args)


# -- the async client -------------------------------------------------------------------


async def aok(request: httpx.Request) -> httpx.Response:
    return ok(request)


def test_async_client() -> None:
    records: list[Record] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fail":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, headers={"Server-Timing": "app;dur=1"}, stream=Chunks(b"xyz"))

    async def main() -> None:
        client = instrument(
            httpx.AsyncClient(transport=httpx.MockTransport(handler)), sink=records.append
        )
        async with client:
            response = await client.get("http://x.test/api/cards/3")
            assert response.content == b"xyz"
            with pytest.raises(httpx.ConnectError):
                await client.get("http://x.test/fail")
            async with client.stream("GET", "http://x.test/s") as streamed:
                async for _chunk in streamed.aiter_raw():
                    assert len(records) == 2
            assert len(records) == 3

    asyncio.run(main())
    assert [(r["route"], r["status"], r.get("error_type")) for r in records] == [
        ("/api/cards/{id}", 200, None),
        ("/fail", 0, "connect"),
        ("/s", 200, None),
    ]
    assert records[0]["response_bytes"] == 3
    assert records[0]["app_ms"] == 1.0


def test_async_cancellation_is_recorded() -> None:
    records: list[Record] = []

    async def main() -> None:
        entered = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            entered.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        client = instrument(
            httpx.AsyncClient(transport=httpx.MockTransport(hang)), sink=records.append
        )
        async with client:
            task = asyncio.create_task(client.get("http://x.test/hang"))
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert len(records) == 1
    assert records[0]["error_type"] == "cancelled"
    assert records[0]["status"] == 0


def test_doctests() -> None:
    assert doctest.testmod(hx).failed == 0


# -- end to end: a real Starlette app on uvicorn ------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.slow
def test_end_to_end_sync(server: str) -> None:
    records: list[Record] = []
    stream = Stream()

    def sink(record: Record) -> None:
        records.append(record)
        stream.push(record)

    with instrument(httpx.Client(base_url=server, timeout=10), sink=sink) as client:
        assert client.get("/cards/42").json() == {"card": "42"}
        with client.stream("GET", "/chunks") as response:
            assert records[-1]["route"] == "/cards/{id}"  # headers only so far
            body = b"".join(response.iter_raw())
            assert records[-1]["route"] == "/chunks"  # at the last byte, before close
        assert client.post("/echo", content=b"x" * 1000).content == b"x" * 1000
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow", timeout=0.2)
    assert [(r["route"], r["status"]) for r in records] == [
        ("/cards/{id}", 200),
        ("/chunks", 200),
        ("/echo", 200),
        ("/slow", 0),
    ]
    cards, chunks, echo, slow = records
    assert cards["app_ms"] == 4.5
    assert cards["db_ms"] == 1.25
    assert cards["server_ms"] == 4.5
    assert cards["duration_ms"] >= cards["server_ms"]
    assert cards["service"] == server.removeprefix("http://")
    assert chunks["response_bytes"] == len(body) == 5 * 1000
    assert chunks["ttfb_ms"] < chunks["duration_ms"]
    assert echo["request_bytes"] == 1000
    assert echo["response_bytes"] == 1000
    assert slow["error_type"] == "timeout"
    assert len(stream.frame()) == 4


@pytest.mark.slow
def test_end_to_end_async(server: str) -> None:
    records: list[Record] = []

    async def main() -> None:
        client = httpx.AsyncClient(base_url=server, timeout=10)
        async with instrument(client, sink=records.append, service="cards-api"):
            results = await asyncio.gather(*(client.get(f"/cards/{i}") for i in range(10)))
            assert all(r.status_code == 200 for r in results)
            async with client.stream("GET", "/chunks") as response:
                assert len(await response.aread()) == 5000

    asyncio.run(main())
    assert len(records) == 11
    assert {r["service"] for r in records} == {"cards-api"}
    assert all(r["app_ms"] == 4.5 for r in records[:10])
    assert records[-1]["response_bytes"] == 5000


@pytest.mark.slow
def test_connection_refused_is_a_connect_record() -> None:
    records: list[Record] = []
    port = closed_port()
    client = instrument(httpx.Client(timeout=5), sink=records.append)
    with client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/anything")
    assert records[0]["error_type"] == "connect"
    assert records[0]["status"] == 0
    assert records[0]["service"] == f"127.0.0.1:{port}"


@pytest.mark.slow
def test_instrumentation_leaves_responses_unchanged(server: str) -> None:
    with httpx.Client(base_url=server) as plain:
        expected = [plain.get(p) for p in ("/cards/1", "/chunks")]
    records: list[Record] = []
    with instrument(httpx.Client(base_url=server), sink=records.append) as client:
        got = [client.get(p) for p in ("/cards/1", "/chunks")]
    for a, b in zip(expected, got, strict=True):
        assert a.status_code == b.status_code
        assert a.content == b.content
        assert a.headers.get("server-timing") == b.headers.get("server-timing")
    assert len(records) == 2
