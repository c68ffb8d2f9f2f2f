"""The wrapped fetch, XHR, WebSocket and EventSource behave exactly like the browser's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from beacon_support import PageLog, demo_started, wait_for

pytestmark = pytest.mark.slow

# Edge cases an app may rely on; run on a page with the beacon and one without.
PROBE = """async () => {
  const out = {};
  const show = async (p) => {
    try {
      const r = await p;
      const body = await r.json();
      delete body.headers["x-perfnb-beacon"];  // /_test/* is outside perfnb's middleware
      return [r.status, body];
    } catch (e) { return [e.name, e.message.split(":")[0]]; }
  };
  out.request = await show(fetch(new Request("/_test/headers", {headers: {"X-A": "1"}})));
  out.headersObject = await show(fetch("/_test/headers", {headers: new Headers({"X-B": "2"})}));
  out.pairs = await show(fetch("/_test/headers", {method: "post", headers: [["X-C", "3"]],
                                                   body: "hello"}));
  out.requestWithInit = await show(fetch(new Request("/_test/headers", {headers: {"X-D": "4"}}),
                                         {headers: {"X-E": "5"}}));
  out.getWithBody = await show(fetch("/_test/headers", {method: "GET", body: "x"}));
  out.badUrl = await show(fetch("http://[bad"));
  let unhandled = 0;
  const onUnhandled = (e) => { unhandled++; e.preventDefault(); };
  addEventListener("unhandledrejection", onUnhandled);
  fetch("http://[bad");
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  removeEventListener("unhandledrejection", onUnhandled);
  out.unhandled = unhandled;
  out.xhr = await new Promise((done) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", "/_test/headers");
    xhr.setRequestHeader("X-F", "6");
    xhr.responseType = "json";
    xhr.onload = () => {
      const body = xhr.response;
      delete body.headers["x-perfnb-beacon"];
      done([xhr.status, body]);
    };
    xhr.send();
  });
  const ws = new WebSocket("ws://" + location.host + "/_test/ws");
  out.websocket = [ws instanceof WebSocket, WebSocket.OPEN,
                   Object.getPrototypeOf(ws) === WebSocket.prototype];
  ws.close();
  const es = new EventSource("/_test/sse");
  out.eventsource = [es instanceof EventSource, EventSource.CLOSED, es.readyState];
  es.close();
  const xhrProto = XMLHttpRequest.prototype;
  out.names = [fetch.name, fetch.length, xhrProto.open.name, xhrProto.send.length,
               history.pushState.name, WebSocket.prototype.send.name, WebSocket.name];
  return out;
}"""


def test_wrappers_change_nothing_the_app_can_see(
    serve_demo: Callable[..., Any], open_page: Callable[[], tuple[Any, PageLog]]
) -> None:
    results = {}
    errors = {}
    for beacon in (True, False):
        with serve_demo(beacon=beacon) as served:
            page, log = open_page()
            page.goto(served.url + "/")
            wait_for(lambda p=page: demo_started(p), timeout=30, what="the demo front end to poll")
            results[beacon] = page.evaluate(PROBE)
            errors[beacon] = [e for e in log.errors if "[bad" not in e]
            carried = log.carried()
    assert results[True] == results[False]
    assert results[True]["unhandled"] == 1
    assert results[True]["request"] == [200, {"method": "GET", "headers": {"x-a": "1"}}]
    assert errors == {True: [], False: []}
    assert carried == []  # the page without the beacon
