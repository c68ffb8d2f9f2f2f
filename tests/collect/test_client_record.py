"""Client records handed to sinks as ClientRecord mappings, built when first read."""

from __future__ import annotations

import doctest
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import perfnb.collect.clientrecord as cr
from perfnb.collect.clientrecord import ClientRecord
from perfnb.collect.httpx import instrument, instrumentation
from perfnb.errors import ConfigError
from perfnb.schema import record_to_json, validate_record
from perfnb.store import Store
from perfnb.stream import Stream

URL = "http://api.test/cards/42"


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Server-Timing": "app;dur=1.5, db;dur=0.5"}, text="hello")


class TwoChunks(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"ab"
        yield b"cde"


def streamed(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/plain"}, stream=TwoChunks())


def fetch(handler: object, n: int = 1) -> list[ClientRecord]:
    kept: list[ClientRecord] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    with instrument(client, sink=kept.append, lazy=True) as c:
        for _ in range(n):
            c.get(URL).close()
    return kept


def test_lazy_false_gives_plain_dicts_equal_to_the_records() -> None:
    plain: list[dict[str, object]] = []
    lazy = fetch(ok)
    client = instrument(
        httpx.Client(transport=httpx.MockTransport(ok)), sink=plain.append, lazy=False
    )
    client.get(URL)
    assert type(plain[0]) is dict
    volatile = {"time", "duration_ms", "ttfb_ms", "server_ms"}
    assert {k: v for k, v in plain[0].items() if k not in volatile} == {
        k: v for k, v in lazy[0].items() if k not in volatile
    }
    assert list(plain[0]) == list(lazy[0])


def test_lazy_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="lazy: got 'yes'"):
        instrument(httpx.Client(), sink=print, lazy="yes")  # type: ignore[arg-type]


def test_the_lazy_sink_gets_a_mapping_equal_to_the_plain_record() -> None:
    (record,) = fetch(ok)
    assert isinstance(record, ClientRecord)
    plain = record.to_dict()
    assert type(plain) is dict
    assert dict(record) == plain == record
    assert record["route"] == "/cards/{id}"
    assert (record["status"], record["app_ms"], record["db_ms"]) == (200, 1.5, 0.5)
    # the server's share is capped at what the client waited
    assert record["server_ms"] == min(1.5, record["duration_ms"])
    assert record.get("error_type") is None
    assert "error_type" not in record
    assert len(record) == len(plain)
    assert list(record) == list(plain)
    assert json.loads(json.dumps(record_to_json(record)))["route"] == "/cards/{id}"
    assert validate_record(record) == plain
    assert "ClientRecord(" in repr(record)


def test_time_is_when_the_request_started() -> None:
    before = datetime.now(UTC)
    (record,) = fetch(ok)
    after = datetime.now(UTC)
    # perf_counter and the wall clock may disagree by a little: allow a millisecond.
    assert before - timedelta(milliseconds=1) <= record["time"] <= after + timedelta(milliseconds=1)


def test_the_clock_anchor_is_taken_again_when_it_is_old() -> None:
    kept: list[ClientRecord] = []
    client = instrument(
        httpx.Client(transport=httpx.MockTransport(ok)), sink=kept.append, lazy=True
    )
    inst = instrumentation(client)
    assert inst is not None
    first = inst.anchor
    inst.anchor_until = 0  # as if a second had passed
    before = datetime.now(UTC)
    client.get(URL)
    assert inst.anchor is not first
    assert kept[0]["time"] >= before - timedelta(milliseconds=1)


def test_a_streamed_record_is_complete_when_handed_over() -> None:
    (record,) = fetch(streamed)
    assert record["response_bytes"] == 5
    assert 0 <= record["ttfb_ms"] <= record["duration_ms"]


def test_a_streamed_record_is_handed_over_when_the_body_ends() -> None:
    kept: list[ClientRecord] = []
    client = instrument(
        httpx.Client(transport=httpx.MockTransport(streamed)), sink=kept.append, lazy=True
    )
    with client.stream("GET", URL) as response:
        assert kept == []
        response.read()
        assert len(kept) == 1
    assert kept[0]["response_bytes"] == 5
    assert len(kept) == 1  # closing after the last byte hands nothing more over


def test_records_go_into_a_stream_and_a_store(tmp_path: Path) -> None:
    records = fetch(ok, n=3)
    stream = Stream()
    for record in records:
        stream.push(record)
    frame = stream.frame()
    assert list(frame["route"]) == ["/cards/{id}"] * 3
    store = Store(tmp_path / "data")
    assert store.append(records) == 3
    stored = store.read(include_load=True)
    assert sorted(stored["status"]) == [200, 200, 200]
    assert set(stored["source"]) == {"client"}


def test_a_record_that_cannot_be_built_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    (record,) = fetch(ok)

    def broken(self: ClientRecord) -> None:
        raise RuntimeError("bug")

    fresh = fetch(ok)[0]
    monkeypatch.setattr(ClientRecord, "_build", broken)
    assert fresh["error_type"] == "PerfnbInternalError"
    assert fresh["source"] == "client"
    assert validate_record(fresh)["kind"] == "http"
    monkeypatch.undo()
    assert record["route"] == "/cards/{id}"


def test_doctests() -> None:
    assert doctest.testmod(cr).failed == 0
