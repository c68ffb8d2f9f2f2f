"""Every metric family the beacon measures reaches the monitor, with the right route and page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from beacon_support import PREFIX, Served, demo_started, make_clicks_slow, wait_for

pytestmark = pytest.mark.slow

PAGE_ACTIONS = """async () => {
  performance.mark("cards-start");
  for (let i = 0; i < 2e5; i++);
  performance.measure("CardList", "cards-start");

  const busy = performance.now();
  while (performance.now() - busy < 150);          // one long animation frame

  await new Promise((done) => {                     // an XHR
    const xhr = new XMLHttpRequest();
    xhr.open("GET", "/api/health");
    xhr.addEventListener("loadend", done);
    xhr.send();
  });

  const abort = new AbortController();              // a fetch that fails
  const failed = fetch("/api/health", { signal: abort.signal });
  abort.abort();
  await failed.catch(() => null);

  await new Promise((done) => {                     // a WebSocket, two messages each way
    const ws = new WebSocket("ws://" + location.host + "/_test/ws");
    let seen = 0;
    ws.onopen = () => { ws.send("one"); ws.send("two"); };
    ws.onmessage = () => { if (++seen === 2) ws.close(1000); };
    ws.onclose = done;
  });

  await new Promise((done) => {                     // an EventSource, three events
    const es = new EventSource("/_test/sse");
    let seen = 0;
    es.onmessage = () => { if (++seen === 3) { es.close(); done(); } };
  });
}"""


def _one(records: list[Any], **want: Any) -> Any:
    found = [r for r in records if all(r.get(k) == v for k, v in want.items())]
    assert found, (
        f"no browser record with {want}; got {[(r['kind'], r.get('name')) for r in records]}"
    )
    return found[0]


def test_every_family_arrives_with_route_and_page(
    serve_demo: Callable[..., Any], open_page: Callable[[], Any]
) -> None:
    served: Served
    with serve_demo() as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: demo_started(page), timeout=30, what="the demo front end to poll")
        page.evaluate(PAGE_ACTIONS)
        make_clicks_slow(page, "nav a[data-view=chat]")
        page.click("nav a[data-view=chat]")  # a trusted input: INP, final LCP, a hash route
        page.evaluate("() => history.pushState(null, '', '/cards/42')")

        def arrived() -> bool:
            names = {(r["kind"], r.get("name")) for r in served.browser_records()}
            return {("navigation", "route"), ("resource", "eventsource")} <= names and any(
                r.get("tags", {}).get("page") == "/cards/42"
                for r in served.browser_records("resource")
            )

        # These ride on the app's own next polls (every 2 s).
        wait_for(arrived, timeout=30, what="records carried on the app's requests")
        page.goto("about:blank")  # hidden, then gone: the rest goes by sendBeacon
        wait_for(
            lambda: {"INP", "CLS"} <= {r.get("name") for r in served.browser_records("vital")},
            timeout=30,
            what="INP and CLS sent on pagehide",
        )
        records = served.browser_records()

    assert log.errors == []

    vitals = {r["name"]: r for r in records if r["kind"] == "vital"}
    assert set(vitals) >= {"FCP", "TTFB", "LCP", "CLS", "INP"}
    for name, rec in vitals.items():
        assert rec["route"] == "/", name
        assert rec["unit"] == ("score" if name == "CLS" else "ms")
        assert rec["tags"]["rating"] in ("good", "needs-improvement", "poor")
        assert rec["service"] == "demo"
        assert rec["client"]
    assert vitals["INP"]["tags"]["target"]

    load = _one(records, kind="navigation", name="load")
    assert load["route"] == "/"
    assert load["duration_ms"] >= load["ttfb_ms"] > 0
    assert {"dns_ms", "connect_ms", "dom_content_loaded_ms", "dom_complete_ms"} <= set(load["tags"])
    hashed = _one(records, kind="navigation", name="route", route="/")
    assert hashed["tags"]["to"] == "/#chat"
    routed = _one(records, kind="navigation", name="route", route="/cards/{id}")
    assert routed["tags"]["trigger"] == "pushState"
    assert routed["tags"]["from"] == "/#chat"
    assert routed["duration_ms"] > 0

    measure = _one(records, kind="render", name="CardList")
    assert measure["route"] == "/"
    assert measure["duration_ms"] > 0
    frame = _one(records, kind="render", name="long-animation-frame")
    assert frame["value"] >= 50
    assert frame["unit"] == "ms"

    polls = [r for r in records if r["kind"] == "resource" and r.get("route") == "/api/poll"]
    assert polls
    poll = polls[0]
    assert poll["name"] == "fetch"
    assert poll["method"] == "GET"
    assert poll["status"] == 200
    assert poll["duration_ms"] >= poll["ttfb_ms"] >= 0
    assert poll["response_bytes"] > 0
    assert poll["tags"]["page"] == "/"
    assert any(r["tags"]["page"] == "/cards/42" for r in polls)
    xhr = _one(records, kind="resource", name="xhr", route="/api/health")
    assert xhr["status"] == 200
    failed = _one(records, kind="resource", name="fetch", error_type="AbortError")
    assert failed["route"] == "/api/health"
    assert failed["status"] == 0
    ws = _one(records, kind="resource", name="websocket")
    assert (ws["route"], ws["method"], ws["tags"]["close_code"]) == ("/_test/ws", "WS", "1000")
    assert "error_type" not in ws
    assert (ws["tags"]["messages_in"], ws["tags"]["messages_out"]) == ("2", "2")
    assert ws["request_bytes"] == ws["response_bytes"] == 6
    es = _one(records, kind="resource", name="eventsource")
    assert es["route"] == "/_test/sse"
    assert es["tags"]["messages_in"] == "3"
    summary = _one(records, kind="resource", name="resources")
    assert summary["value"] >= 1
    assert summary["tags"]["slowest"]
    # perfnb's own script and endpoints are never counted as the app's.
    assert not [r for r in records if str(r.get("route", "")).startswith(("/_perfnb", PREFIX))]

    heap = _one(records, kind="process", name="js_heap_bytes")
    assert heap["value"] > 0
    assert heap["unit"] == "bytes"
    nodes = _one(records, kind="process", name="dom_nodes")
    assert nodes["value"] > 20


def test_frame_rate_is_sampled_only_while_asked(
    serve_demo: Callable[..., Any], open_page: Callable[[], Any]
) -> None:
    with serve_demo() as served:
        page, log = open_page()
        page.goto(served.url + "/")
        wait_for(lambda: demo_started(page), timeout=30, what="the demo front end to poll")
        # Off by default: a few carried batches later there is still no fps record.
        wait_for(
            lambda: len(served.browser_records("resource")) >= 3,
            timeout=30,
            what="a few carried batches",
        )
        assert not [r for r in served.browser_records("render") if r.get("name") == "fps"]

        served.beacon.frames = True  # the open page learns it from its next batch's answer

        def fps() -> list[Any]:
            return [r for r in served.browser_records("render") if r.get("name") == "fps"]

        wait_for(lambda: len(fps()) >= 2, timeout=30, what="frame-rate samples")
        assert all(r["value"] > 0 and r["unit"] == "fps" for r in fps())
    assert log.errors == []
