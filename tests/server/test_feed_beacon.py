"""Browser batches: the shape, the POST intake and the X-Perfnb-Beacon header.

Whatever arrives, nothing raises into the app, the app's answer does not
change, and every bad batch is counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from feed_support import monitored_app, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfnb.errors import RecordError
from perfnb.server.beacon import (
    BeaconLimits,
    PageNames,
    batch_records,
    decode_header,
    encode_header,
)
from perfnb.server.monitor import Monitor

PREFIX = "/api/performance-metrics"
NOW_MS = 1_767_225_600_000.0


def _batch(*records: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": 1, "page": "/cards/42", "records": list(records)}
    doc.update(envelope)
    return doc


def _parse(batch: object, **kw: Any) -> tuple[list[Any], list[str]]:
    return batch_records(
        batch,
        service="shop",
        pages=PageNames(limit=kw.pop("pages", 100)),
        secret=b"k" * 16,
        now_ms=NOW_MS,
        limits=kw.pop("limits", BeaconLimits()),
        **kw,
    )


def test_every_documented_kind_becomes_a_browser_record() -> None:
    records, errors = _parse(
        _batch(
            {"kind": "vital", "name": "LCP", "value": 1234.5, "unit": "ms", "t": NOW_MS},
            {"kind": "navigation", "t": NOW_MS, "duration_ms": 88.0, "ttfb_ms": 21.5},
            {"kind": "render", "name": "CardList", "t": NOW_MS, "duration_ms": 12.0},
            {
                "kind": "resource",
                "t": NOW_MS,
                "route": "/api/cards?page=2",
                "method": "GET",
                "status": 200,
                "duration_ms": 45.1,
                "response_bytes": 5120,
            },
            {
                "kind": "process",
                "name": "js_heap_bytes",
                "value": 24641536,
                "unit": "bytes",
                "t": NOW_MS,
                "tags": {"tab": "main"},
            },
            {"kind": "render", "t": NOW_MS, "error_type": "TypeError", "error_message": "x" * 2000},
            session="tab-7",
        )
    )
    assert errors == []
    assert [r["kind"] for r in records] == [
        "vital",
        "navigation",
        "render",
        "resource",
        "process",
        "render",
    ]
    assert {r["source"] for r in records} == {"browser"}
    assert {r["service"] for r in records} == {"shop"}
    assert records[0]["route"] == "/cards/{id}"
    assert records[3]["route"] == "/api/cards"
    assert records[4]["tags"] == {"tab": "main"}
    assert len(records[5]["error_message"]) == 512
    assert len({r["client"] for r in records}) == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"kind": "http", "t": NOW_MS}, "kind"),
        ({"kind": "vital"}, "'t'"),
        ({"kind": "vital", "t": "now"}, "'t'"),
        ({"kind": "vital", "t": NOW_MS + 3 * 86_400_000}, "'t'"),
        ({"kind": "vital", "t": NOW_MS, "value": "1"}, "'value'"),
        ({"kind": "vital", "t": NOW_MS, "value": True}, "'value'"),
        ({"kind": "render", "t": NOW_MS, "duration_ms": -1}, "'duration_ms'"),
        ({"kind": "resource", "t": NOW_MS, "status": 1000}, "'status'"),
        ({"kind": "resource", "t": NOW_MS, "response_bytes": -5}, "'response_bytes'"),
        ({"kind": "vital", "t": NOW_MS, "name": "n" * 500}, "'name'"),
        ({"kind": "vital", "t": NOW_MS, "tags": {"a": 1}}, "tags"),
        ({"kind": "vital", "t": NOW_MS, "source": "server"}, "'source'"),
        ("a string", "JSON object"),
    ],
)
def test_a_bad_record_is_dropped_alone_naming_the_field(record: object, field: str) -> None:
    good = {"kind": "vital", "name": "CLS", "value": 0.01, "t": NOW_MS}
    records, errors = _parse(_batch(good, record))  # type: ignore[arg-type]
    assert len(records) == 1
    assert len(errors) == 1
    assert field in errors[0]


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ([], "JSON object"),
        ({"page": "/", "records": []}, "'v'"),
        ({"v": True, "page": "/", "records": []}, "'v'"),
        ({"v": 1, "page": 5, "records": []}, "'page'"),
        ({"v": 1, "page": "/", "records": {}}, "'records'"),
        ({"v": 1, "page": "/", "records": [], "extra": 1}, "'extra'"),
        ({"v": 1, "page": "/", "session": 5, "records": []}, "'session'"),
        ({"v": 1, "page": "/", "records": [{}] * 201}, "at most 200"),
    ],
)
def test_a_bad_envelope_drops_the_batch(batch: object, field: str) -> None:
    with pytest.raises(RecordError, match=field):
        _parse(batch)


def test_route_stands_in_for_a_missing_page_and_pages_are_bounded() -> None:
    records, _ = _parse({"v": 1, "records": [{"kind": "vital", "t": NOW_MS}]}, route="/from-header")
    assert records[0]["route"] == "/from-header"
    pages = PageNames(limit=2)
    names = [pages.name(p) for p in ("/a", "/b/123", "/b/456", "/c", "/d")]
    assert names == ["/a", "/b/{id}", "/b/{id}", "(other)", "(other)"]


def test_header_round_trip_and_refusals() -> None:
    batch = _batch({"kind": "vital", "t": NOW_MS})
    assert decode_header(encode_header(batch)) == batch
    assert decode_header(encode_header(batch) + "==") == batch
    for bad in ("a", "ab$d", "e30" * 10_000):
        with pytest.raises(RecordError):
            decode_header(bad)
    import base64

    nan = base64.urlsafe_b64encode(b'{"v": NaN}').decode()
    with pytest.raises(RecordError, match="constant"):
        decode_header(nan)


def test_nan_and_infinity_are_refused() -> None:
    from perfnb.server.beacon import decode_body

    for text in (b'{"v": NaN}', b'{"v": Infinity}', b'{"v": -Infinity}'):
        with pytest.raises(RecordError, match="constant"):
            decode_body(text)


def test_deep_nesting_is_refused_not_raised() -> None:
    from perfnb.server.beacon import decode_body

    with pytest.raises(RecordError):
        decode_body(b"[" * 100_000 + b"]" * 100_000)


# -- over HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, Monitor]]:
    monitor = Monitor(buffer_size=100_000)
    with serve(monitored_app(monitor)) as url:
        yield url, monitor


def _vital() -> dict[str, Any]:
    return {"kind": "vital", "name": "INP", "value": 80.0, "unit": "ms", "t": time.time() * 1000}


@pytest.mark.slow
def test_post_beacon_records_browser_records(live: tuple[str, Monitor]) -> None:
    url, monitor = live
    before = monitor.last_seq
    response = httpx.post(f"{url}{PREFIX}/beacon", json=_batch(_vital(), _vital()))
    assert response.status_code == 204
    assert monitor.last_seq == before + 2
    assert monitor.buffer.latest(1)[0]["source"] == "browser"
    # sendBeacon posts text/plain: the content type does not matter.
    response = httpx.post(
        f"{url}{PREFIX}/beacon",
        content=json.dumps(_batch(_vital())),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 204


@pytest.mark.slow
def test_post_beacon_bad_envelope_is_400_and_counted(live: tuple[str, Monitor]) -> None:
    url, monitor = live
    bad = monitor.counters["beacon_batches_bad"]
    response = httpx.post(f"{url}{PREFIX}/beacon", content=b'{"v": 9}')
    assert response.status_code == 400
    assert "'v'" in response.json()["error"]
    assert monitor.counters["beacon_batches_bad"] == bad + 1


@pytest.mark.slow
def test_oversized_beacon_bodies_get_413_unread(live: tuple[str, Monitor]) -> None:
    url, monitor = live
    before = monitor.counters["beacon_too_large"]
    declared = httpx.post(f"{url}{PREFIX}/beacon", content=b"x" * (64 * 1024 + 1))
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked upload
        for _ in range(100):
            yield b"y" * 4096

    chunked = httpx.post(f"{url}{PREFIX}/beacon", content=chunks())
    assert chunked.status_code == 413
    assert monitor.counters["beacon_too_large"] == before + 2


@pytest.mark.slow
def test_beacon_header_on_the_apps_own_request(live: tuple[str, Monitor]) -> None:
    url, monitor = live
    before = monitor.counters["beacon_records"]
    header = encode_header(_batch(_vital(), _vital(), _vital()))
    response = httpx.get(f"{url}/hello", headers={"X-Perfnb-Beacon": header})
    assert (response.status_code, response.text) == (200, "hello")
    assert monitor.counters["beacon_records"] == before + 3


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_batches = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 2, "1", None]),
        "page": st.sampled_from(["/", "/a/1", 5, None]) | st.text(max_size=30),
        "session": st.text(max_size=10) | st.integers(),
        "records": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "kind": st.sampled_from(["vital", "render", "http", 3]),
                    "t": st.sampled_from([NOW_MS, 0, "x"]) | st.floats(allow_nan=False),
                    "value": _json_values,
                    "name": _json_values,
                    "tags": _json_values,
                    "status": _json_values,
                },
            )
            | _json_values,
            max_size=5,
        )
        | _json_values,
    },
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300) | _batches.map(lambda b: json.dumps(b).encode()))
def test_random_beacon_bodies_never_break_the_endpoint(
    live: tuple[str, Monitor], body: bytes
) -> None:
    url, _ = live
    response = httpx.post(f"{url}{PREFIX}/beacon", content=body)
    assert response.status_code in (204, 400)
    assert httpx.get(f"{url}{PREFIX}/control").status_code == 200


_header_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_header_text | _batches.map(encode_header) | st.just("A" * 9000))
def test_random_beacon_headers_never_change_the_apps_answer(
    live: tuple[str, Monitor], value: str
) -> None:
    url, monitor = live
    counted = monitor.counters
    seen = counted["beacon_batches"] + counted["beacon_batches_bad"]
    response = httpx.get(f"{url}/hello", headers={"X-Perfnb-Beacon": value})
    assert (response.status_code, response.text) == (200, "hello")
    counted = monitor.counters
    assert counted["beacon_batches"] + counted["beacon_batches_bad"] == seen + 1


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=400) | st.text(max_size=400))
def test_arbitrary_header_bytes_never_raise(value: bytes | str) -> None:
    monitor = Monitor()
    monitor.take_beacon_header(value, route="/", client="127.0.0.1")
    counted = monitor.counters
    assert counted["beacon_batches"] + counted["beacon_batches_bad"] == 1
