"""ClientRecords (what sinks get with ``lazy=True``): what they hold, and who takes them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from perfnb.collect.clientrecord import ClientRecord
from perfnb.collect.httpx import instrument as _instrument
from perfnb.collect.httpx import instrumentation
from perfnb.schema import record_to_json, validate_record
from perfnb.store import Store
from perfnb.stream import Stream

URL = "http://api.test/cards/42"
ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)


def instrument(client: ClientT, **options: Any) -> ClientT:
    """``instrument`` with ``lazy=True``, the subject of this file."""
    return _instrument(client, lazy=True, **options)


SECRET = "Bearer s3cr3t-T0ken-value"


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Server-Timing": "app;dur=1.5, db;dur=0.5"}, text="hello")


class Breaks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that fails after its first chunk with a message repeating a secret."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"abc"
        raise httpx.ReadError(f"reset while sending {SECRET}")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"abc"
        raise httpx.ReadError(f"reset while sending {SECRET}")


def breaks(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=Breaks())


def test_the_sink_gets_dicts_by_default_and_client_records_when_lazy() -> None:
    plain: list[object] = []
    with _instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=plain.append) as c:
        c.get(URL)
    assert type(plain[0]) is dict

    kept: list[ClientRecord] = []
    with instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=kept.append) as c:
        c.get(URL)
    (record,) = kept
    assert isinstance(record, ClientRecord)
    assert record.done
    assert validate_record(record)["route"] == "/cards/{id}"
    inst = instrumentation(c)
    assert inst is not None
    assert inst.lazy
    assert inst.records == 1


def test_a_record_kept_unread_is_complete_when_read_much_later() -> None:
    kept: list[ClientRecord] = []
    client = instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=kept.append)
    before = datetime.now(UTC)
    with client:
        client.post(URL, content=b"12345", headers={"X-Perfnb-Run": "run-1"})
        for _ in range(50):
            client.get("http://api.test/other")
    inst = instrumentation(client)
    assert inst is not None
    inst.new_anchor()  # records are dated by whichever anchor is current when read
    first = kept[0]
    assert before - timedelta(milliseconds=5) <= first["time"] <= datetime.now(UTC)
    assert (first["method"], first["route"], first["run_id"]) == ("POST", "/cards/{id}", "run-1")
    assert (first["request_bytes"], first["response_bytes"], first["app_ms"]) == (5, 5, 1.5)
    assert first == first.to_dict()  # built once, then the same on every read
    assert kept[1]["route"] == "/other"


def test_sinks_of_every_kind_take_the_lazy_records(tmp_path: Path) -> None:
    stream, unchecked = Stream(), Stream(validate=False)
    store = Store(tmp_path / "data")
    with store.writer() as writer:

        def everywhere(record: ClientRecord) -> None:
            stream.push(record)
            unchecked.push(record)  # type: ignore[arg-type]
            writer.append(record)

        with instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=everywhere) as c:
            for _ in range(3):
                c.get(URL)
        inst = instrumentation(c)
        assert inst is not None
        assert inst.sink_errors == 0
    for frame in (stream.frame(), unchecked.frame(), store.read(include_load=True)):
        assert list(frame["route"]) == ["/cards/{id}"] * 3
        assert list(frame["app_ms"]) == [1.5] * 3


def test_a_record_goes_to_json() -> None:
    kept: list[ClientRecord] = []
    with instrument(httpx.Client(transport=httpx.MockTransport(ok)), sink=kept.append) as c:
        c.get(URL)
    wire = json.loads(json.dumps(record_to_json(kept[0])))
    assert wire["route"] == "/cards/{id}"
    assert json.loads(json.dumps(kept[0].to_dict(), default=str))["status"] == 200


def test_a_body_error_is_scrubbed_of_the_requests_secrets() -> None:
    kept: list[ClientRecord] = []
    client = instrument(httpx.Client(transport=httpx.MockTransport(breaks)), sink=kept.append)
    with client, pytest.raises(httpx.ReadError):
        client.get(URL, headers={"Authorization": SECRET})
    (record,) = kept
    assert (record["status"], record["error_type"], record["response_bytes"]) == (
        200,
        "network",
        3,
    )
    assert "s3cr3t" not in record["error_message"]
    assert "[redacted]" in record["error_message"]


def test_an_async_body_error_is_scrubbed_of_the_requests_secrets() -> None:
    kept: list[ClientRecord] = []

    async def main() -> None:
        client = instrument(
            httpx.AsyncClient(transport=httpx.MockTransport(breaks)), sink=kept.append
        )
        async with client:
            with pytest.raises(httpx.ReadError):
                await client.get(URL, headers={"Authorization": SECRET})

    asyncio.run(main())
    (record,) = kept
    assert (record["status"], record["error_type"], record["response_bytes"]) == (
        200,
        "network",
        3,
    )
    assert "s3cr3t" not in record["error_message"]


def test_a_streamed_body_read_in_part_counts_what_arrived() -> None:
    kept: list[ClientRecord] = []

    class Three(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from (b"ab", b"cd", b"ef")

    client = instrument(
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=Three()))),
        sink=kept.append,
    )
    with client, client.stream("GET", URL) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"ab"
        assert next(chunks) == b"cd"
        assert kept == []
    (record,) = kept
    assert record["response_bytes"] == 4
    assert "error_type" not in record


class AsyncChunks(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def test_async_bodies_end_where_httpx_closes_them() -> None:
    """Async bodies pass through untouched; the record ends and counts at aclose."""
    kept: list[ClientRecord] = []
    bodies: list[AsyncChunks] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(AsyncChunks(b"ab", b"cd", b"ef"))
        return httpx.Response(200, stream=bodies[-1])

    async def main() -> None:
        client = instrument(
            httpx.AsyncClient(transport=httpx.MockTransport(handler)), sink=kept.append
        )
        async with client:
            assert (await client.get("http://x.test/whole")).content == b"abcdef"
            # a retry inside an except block: the error being handled is not this request's
            try:
                raise httpx.ConnectError("first try refused")
            except httpx.ConnectError:
                await client.get("http://x.test/retry")

            # the reader's own exception is not the request's
            async def buggy_reader() -> None:
                async with client.stream("GET", "http://x.test/mine") as response:
                    async for _chunk in response.aiter_raw():
                        raise KeyError("the reader's bug")

            with pytest.raises(KeyError):
                await buggy_reader()
            # abandoned after one chunk
            async with client.stream("GET", "http://x.test/part") as response:
                async for _chunk in response.aiter_raw():
                    assert len(kept) == 3
                    break
            assert len(kept) == 4

    asyncio.run(main())
    assert [(r["route"], r["response_bytes"], r.get("error_type")) for r in kept] == [
        ("/whole", 6, None),
        ("/retry", 6, None),
        ("/mine", 2, None),
        ("/part", 2, None),
    ]
    assert all(body.closed for body in bodies)
    assert all(0 <= r["ttfb_ms"] <= r["duration_ms"] for r in kept)


def test_an_async_cancellation_while_the_body_is_read_is_recorded() -> None:
    kept: list[ClientRecord] = []

    async def main() -> None:
        started = asyncio.Event()

        class Stalls(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield b"abc"
                started.set()
                await asyncio.Event().wait()
                yield b"never"

        client = instrument(
            httpx.AsyncClient(
                transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=Stalls()))
            ),
            sink=kept.append,
        )
        async with client:
            task = asyncio.create_task(client.get(URL))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    (record,) = kept
    assert (record["status"], record["error_type"], record["response_bytes"]) == (
        200,
        "cancelled",
        3,
    )


def test_repeated_response_headers_all_count() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = [
            (b"Server-Timing", b"db;dur=2"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Server-Timing", b"app;dur=5"),
            (b"Content-Type", b"text/event-stream"),
        ]
        return httpx.Response(200, headers=headers, stream=AsyncChunks())

    kept: list[ClientRecord] = []

    async def main() -> None:
        client = instrument(
            httpx.AsyncClient(transport=httpx.MockTransport(handler)), sink=kept.append
        )
        async with client:
            await client.get(URL)

    asyncio.run(main())
    (record,) = kept
    assert (record["kind"], record["app_ms"], record["db_ms"]) == ("stream", 5.0, 2.0)
    assert "a=1" not in repr(record)
