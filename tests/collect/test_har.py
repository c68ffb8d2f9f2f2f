"""HAR import: a HAR recorded by real headless Chromium, hand-written edge cases, the store."""

from __future__ import annotations

import copy
import io
import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from perfnb.collect.har import read_har
from perfnb.errors import ConfigError, PerfnbWarning
from perfnb.schema import validate_record
from perfnb.store import Store

DATA = Path(__file__).parent / "data"
#: Recorded by Playwright's ``record_har_path`` in headless Chromium against the demo
#: app (content omitted): a page load, a fetch to a closed port, a fetch with an
#: Authorization header and a query string.
CHROMIUM_HAR = DATA / "demo_chromium.har"


def entry(**over: Any) -> dict[str, Any]:
    """A Chrome-DevTools-style entry; ``over`` replaces top-level fields."""
    base: dict[str, Any] = {
        "startedDateTime": "2026-03-01T13:00:00.250+01:00",
        "time": 40.5,
        "request": {
            "method": "get",
            "url": "https://user:pw@shop.test:8443/api/users/550e8400-e29b-41d4-a716-446655440000"
            "/orders/123?token=s3cret#frag",
            "headers": [
                {"name": "Cookie", "value": "session=s3cret"},
                {"name": "Authorization", "value": "Bearer s3cret"},
            ],
            "cookies": [{"name": "session", "value": "s3cret"}],
            "queryString": [{"name": "token", "value": "s3cret"}],
            "bodySize": 0,
        },
        "response": {
            "status": 200,
            "headers": [
                {"name": "Server-Timing", "value": "db;dur=2.5"},
                {"name": "server-timing", "value": 'app;dur=9.25;desc="handler"'},
                {"name": "Set-Cookie", "value": "session=s3cret"},
            ],
            "bodySize": 2048,
        },
        "timings": {
            "blocked": -1,
            "dns": 2,
            "connect": 3,
            "ssl": 1,
            "send": 0.5,
            "wait": 10,
            "receive": 25,
        },
        "_resourceType": "fetch",
    }
    base.update(over)
    return base


def har(*entries: dict[str, Any], pages: list[Any] | None = None) -> dict[str, Any]:
    log: dict[str, Any] = {"version": "1.2", "creator": {"name": "test"}, "entries": list(entries)}
    if pages is not None:
        log["pages"] = pages
    return {"log": log}


def no_secrets(records: list[Any]) -> None:
    text = json.dumps([{k: str(v) for k, v in r.items()} for r in records])
    for secret in ("s3cret", "token", "Bearer", "user:pw", "sig=", "?"):
        assert secret not in text, secret


# -- what an entry becomes ------------------------------------------------------------------


def test_an_entry_becomes_one_client_http_record() -> None:
    (record,) = read_har(har(entry()))
    assert record == validate_record(record)
    assert record == {
        "time": datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),
        "source": "client",
        "kind": "http",
        "service": "shop.test:8443",
        "route": "/api/users/{id}/orders/{id}",
        "method": "GET",
        "status": 200,
        "duration_ms": 40.5,
        "ttfb_ms": 15.5,  # blocked is -1 (n/a); ssl is inside connect already
        "request_bytes": 0,
        "response_bytes": 2048,
        "server_ms": 9.25,
        "app_ms": 9.25,
        "db_ms": 2.5,
        "tags": {"host": "shop.test:8443", "resource": "fetch"},
    }
    no_secrets([record])


def test_route_for_and_service() -> None:
    def route_for(url: str) -> str | None:
        return "/api/users/{user_id}/orders/{order_id}" if "/orders/" in url else None

    other = entry(
        request={"method": "GET", "url": "http://cdn.test/img/0a1b2c3d4e5f60718293a4b5c6d7e8f9.png"}
    )
    first, second = read_har(har(entry(), other), service="shop", route_for=route_for)
    assert first["route"] == "/api/users/{user_id}/orders/{order_id}"
    assert second["route"] == "/img/0a1b2c3d4e5f60718293a4b5c6d7e8f9.png"  # not a whole-segment id
    assert first["service"] == second["service"] == "shop"
    assert second["tags"]["host"] == "cdn.test"
    with pytest.raises(ConfigError, match="route_for: returned 42"):
        read_har(har(entry()), route_for=lambda url: 42)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        ({"status": 0, "_error": "net::ERR_BLOCKED_BY_CLIENT"}, "blocked"),
        ({"status": 0, "_error": "net::ERR_CONNECTION_REFUSED"}, "connect"),
        ({"status": -1, "_failureText": "net::ERR_TIMED_OUT"}, "timeout"),
        ({"status": 0, "_error": "net::ERR_ABORTED"}, "cancelled"),
        ({"status": 0, "_error": "net::ERR_HTTP2_PROTOCOL_ERROR"}, "network"),
        ({"status": 0}, "network"),
    ],
)
def test_failed_and_blocked_entries(response: dict[str, Any], error_type: str) -> None:
    failed = entry(
        response={"headers": [], "bodySize": -1, **response},
        timings={"blocked": -1, "dns": -1, "connect": -1, "send": -1, "wait": -1, "receive": -1},
    )
    (record,) = read_har(har(failed))
    assert record["status"] == 0
    assert record["error_type"] == error_type
    assert "response_bytes" not in record
    assert "ttfb_ms" not in record
    assert record == validate_record(record)


def test_urls_in_error_texts_lose_their_secrets() -> None:
    text = "net::ERR_FAILED at https://u:p@api.test/x/1?key=s3cret and ws://h/y?t=s3cret"
    (record,) = read_har(har(entry(response={"status": 0, "_error": text})))
    assert record["error_message"] == "net::ERR_FAILED at https://api.test/x/1 and ws://h/y"


def test_websocket_entries_and_load_runs() -> None:
    ws = entry(
        request={
            "method": "GET",
            "url": "ws://127.0.0.1:8000/ws/chat",
            "headers": [{"name": "X-Perfnb-Run", "value": "run-7"}],
        },
        response={"status": 101},
        _webSocketMessages=[
            {"type": "send", "time": 1.0, "opcode": 1, "data": "hi"},
            {"type": "receive", "time": 1.1, "opcode": 1, "data": "hi"},
            {"type": "receive", "time": 1.2, "opcode": 1, "data": "there"},
        ],
    )
    (record,) = read_har(har(ws))
    assert (record["kind"], record["method"], record["status"]) == ("websocket", "WS", 101)
    assert (record["messages_in"], record["messages_out"]) == (2, 1)
    assert record["run_id"] == "run-7"


def test_entries_off_the_network_are_left_out() -> None:
    urls = ["data:image/png;base64,AAAA", "blob:https://x.test/1", "about:blank",
            "chrome-extension://abc/x.js"]  # fmt: skip
    off = [entry(request={"method": "GET", "url": url}) for url in urls]
    records = read_har(har(*off, entry()))
    assert [r["service"] for r in records] == ["shop.test:8443"]


def test_pages_become_navigation_records_in_time_order() -> None:
    pages = [
        {
            "startedDateTime": "2026-03-01T11:59:59.000Z",
            "id": "page_1",
            "title": "Shop",
            "pageTimings": {"onContentLoad": 120.5, "onLoad": 340},
        },
        {"startedDateTime": "2026-03-01T12:05:00Z", "id": "page_2", "pageTimings": {"onLoad": -1}},
    ]
    doc = entry(pageref="page_1", _resourceType="document",
                request={"method": "GET", "url": "https://shop.test/cards/7?q=1"})  # fmt: skip
    api = entry(pageref="page_1", startedDateTime="2026-03-01T11:59:59.500Z")
    records = read_har(har(api, doc, pages=pages), service="shop")
    assert [r["kind"] for r in records] == ["navigation", "navigation", "http", "http"]
    content, load = records[0], records[1]
    assert (content["name"], content["value"], content["unit"]) == ("onContentLoad", 120.5, "ms")
    assert (load["name"], load["value"], load["duration_ms"]) == ("onLoad", 340.0, 340.0)
    assert load["route"] == "/cards/{id}"  # the page's document request, not its first fetch
    assert load["service"] == "shop"
    times = [r["time"] for r in records]
    assert times == sorted(times)


# -- bad documents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ([], r"HAR: the document: got \[\]; expected an object with 'log'"),
        ({}, "HAR: log: missing"),
        ({"log": []}, r"HAR: log: got \[\]; expected an object"),
        ({"log": {}}, "HAR: log.entries: missing"),
        ({"log": {"entries": "x"}}, "HAR: log.entries: got 'x'; expected an array"),
        ({"log": {"entries": [], "pages": {}}}, "HAR: log.pages: got {}; expected an array"),
        (har(entry(), entry(time="12")), r"log.entries\[1\].time: got '12'; expected a number"),
        (har(entry(time=True)), r"log.entries\[0\].time: got True; expected a number"),
        (har(entry(startedDateTime="yesterday")), r"entries\[0\].startedDateTime: got 'yesterday'"),
        (har(entry(startedDateTime="2026-03-01T12:00:00")), "expected a time with a UTC offset"),
        (har({"time": 1}), r"log.entries\[0\].startedDateTime: missing"),
        (har(entry(request="GET /")), r"log.entries\[0\].request: got 'GET /'; expected an object"),
        (har(entry(response={"status": "200"})), r"entries\[0\].response.status: got '200'"),
        (har(entry(timings=[])), r"log.entries\[0\].timings: got \[\]"),
        (har(entry(timings={"wait": "1"})), r"log.entries\[0\].timings.wait: got '1'"),
        (har(3), r"log.entries\[0\]: got 3; expected an object"),
        (har(entry(), entry(time=1e300)), r"log.entries\[1\]: column 'duration_ms'"),
        (har(pages=[{"startedDateTime": 5}]), r"log.pages\[0\].startedDateTime: got 5"),
    ],
)
def test_bad_documents_name_the_field(document: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        read_har(document)
    with pytest.raises(ConfigError, match=match):
        read_har(io.StringIO(json.dumps(document)))


def test_bad_entries_can_be_skipped_and_counted() -> None:
    document = har(entry(), entry(time="12"), entry(response=None), entry())
    with pytest.warns(PerfnbWarning, match=r"skipped 2 bad entries .*entries\[1\].time"):
        records = read_har(document, skip_bad=True)
    assert len(records) == 2


def test_files_paths_and_streams(tmp_path: Path) -> None:
    document = har(entry())
    path = tmp_path / "s.har"
    path.write_text(json.dumps(document))
    expected = read_har(document)
    assert read_har(path) == read_har(str(path)) == expected
    assert read_har(io.StringIO(json.dumps(document))) == expected
    assert read_har(io.BytesIO(json.dumps(document).encode())) == expected
    path.write_text('{"log": {"entries": [}')
    with pytest.raises(ConfigError, match=r"HAR: not JSON \(line 1, column 22"):
        read_har(path)
    path.write_bytes(b'{"log": "\xff"}')
    with pytest.raises(ConfigError, match="HAR: not UTF-8"):
        read_har(path)
    with pytest.raises(ConfigError, match=r"HAR: cannot read .*missing\.har"):
        read_har(tmp_path / "missing.har")


def test_the_document_is_not_changed() -> None:
    document = har(entry(), pages=[{"startedDateTime": "2026-03-01T12:00:00Z", "id": "p"}])
    before = copy.deepcopy(document)
    read_har(document)
    assert document == before


# -- real Chromium ----------------------------------------------------------------------------


def test_a_har_recorded_by_chromium() -> None:
    records = read_har(CHROMIUM_HAR, service="demo")
    assert all(r == validate_record(r) for r in records)
    no_secrets(records)
    http = [r for r in records if r["kind"] == "http"]
    raw = json.loads(CHROMIUM_HAR.read_text())
    assert len(http) == len(raw["log"]["entries"])
    (document,) = [r for r in http if r["tags"].get("resource") == "document"]
    assert (document["route"], document["status"]) == ("/", 200)
    assert 0 < document["server_ms"] <= document["duration_ms"]
    assert document["ttfb_ms"] <= document["duration_ms"]
    (failed,) = [r for r in http if r["status"] == 0]
    assert (failed["error_type"], failed["error_message"]) == (
        "connect",
        "net::ERR_CONNECTION_REFUSED",
    )
    assert {r["route"] for r in http} >= {"/api/cards/{id}", "/api/guests", "/static/app.js"}
    names = {r["name"]: r for r in records if r["kind"] == "navigation"}
    assert set(names) == {"onContentLoad", "onLoad"}
    assert names["onLoad"]["route"] == "/"
    assert names["onLoad"]["value"] > 0


@pytest.mark.slow
def test_live_chromium_session_beside_server_records(tmp_path: Path) -> None:
    from browser_beacon.beacon_support import serve_app
    from chromium import launch

    def route_for(url: str) -> str | None:
        return "/api/cards/{card_id}" if re.search(r"/api/cards/\d+", url) else None

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = sock.getsockname()[1]
    sock.close()  # a port nothing listens on
    har_path = tmp_path / "session.har"
    with serve_app(beacon=False) as served, launch() as browser:
        context = browser.new_context(record_har_path=str(har_path), record_har_content="omit")
        page = context.new_page()
        # The page signs in as a guest first thing; the fetches below wait for that.
        with page.expect_response(lambda r: r.url.endswith("/api/guests"), timeout=60_000):
            page.goto(served.url + "/?q=s3cret", wait_until="load")
        page.evaluate(
            """async (closed) => {
                const auth = {headers: {Authorization: 'Bearer s3cret'}};
                await fetch('/api/cards/12345?sig=s3cret', auth);
                await fetch(`http://127.0.0.1:${closed}/x?token=s3cret`).catch(() => 0);
            }""",
            closed,
        )
        context.close()  # writes the HAR
        server_records = [r for r in list(served.records) if r.get("source") == "server"]
    records = read_har(har_path, service="demo", route_for=route_for)
    no_secrets(records)
    card = [r for r in records if r.get("route") == "/api/cards/{card_id}"]
    assert len(card) == 1
    assert card[0]["status"] == 404  # signed in, no such card
    assert "app_ms" in card[0]
    assert any(
        r["status"] == 0 and r["error_type"] == "connect" for r in records if r["kind"] == "http"
    )
    assert any(r["kind"] == "navigation" and r["name"] == "onLoad" for r in records)

    store = Store(tmp_path / "store")
    store.append(server_records + records)
    both = store.read(routes=["/api/cards/{card_id}"], kinds=["http"])
    assert sorted(both["source"].astype(str)) == ["client", "server"]
    assert set(store.read(sources=["client"])["service"].astype(str)) == {"demo"}
    assert len(store.read(sources=["client"])) == len(records)
