"""The beacon on a WSGI app: Flask under wsgiref, checked with raw HTTP and real Chromium."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from beacon_support import wait_for
from flask import Flask, Response, make_response, request, stream_with_context

from perfnb.schema import Record
from perfnb.server import Monitor, PerfnbWSGIMiddleware
from perfnb.server.beacon import encode_header
from perfnb.server.beaconjs import beacon_source
from perfnb.server.beaconwsgi import BeaconScriptWSGI

pytestmark = pytest.mark.slow

PAGE = (
    "<!doctype html><html><head><title>shop</title></head><body>"
    "<button id=buy onclick=\"fetch('/api/items/7')\">buy</button></body></html>"
)


def flask_app() -> Flask:
    app = Flask("shop")

    @app.get("/")
    def index() -> Response:
        response = make_response(PAGE)
        response.set_etag("page-v1")
        return response.make_conditional(request)

    @app.get("/streamed")
    def streamed() -> Response:
        def parts() -> Iterator[str]:
            yield "<html><head>"
            yield "</head><body>late</body></html>"

        return Response(stream_with_context(parts()), mimetype="text/html")

    @app.get("/fragment")
    def fragment() -> str:
        return "<li>one item</li>"

    @app.get("/api/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(app: Any) -> Iterator[int]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    # one thread per request: the page's beacon and its own requests overlap
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=15)
        server.server_close()


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[str, Monitor, BeaconScriptWSGI, list[Record]]]:
    records: list[Record] = []
    monitor = Monitor(service="shop", sink=records.append)
    app = flask_app()
    wrapper = BeaconScriptWSGI(PerfnbWSGIMiddleware(app.wsgi_app, monitor=monitor), monitor=monitor)
    with serve(wrapper) as port:
        yield f"http://127.0.0.1:{port}", monitor, wrapper, records


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket: status, headers (lower-case names), body."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    lines = [f"GET /{rest} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((address, int(port)), timeout=15) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


def test_the_script_is_served_with_caching(shop: Any) -> None:
    url, _, wrapper, _ = shop
    status, headers, body = get(f"{url}{wrapper.path}")
    assert (status, body) == (200, beacon_source())
    assert headers["content-type"].startswith("text/javascript")
    assert int(headers["content-length"]) == len(body)
    status, _, body = get(f"{url}{wrapper.path}", {"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")


def test_pages_get_the_tag_and_a_right_content_length(shop: Any) -> None:
    url, _, wrapper, _ = shop
    for path in ("/", "/streamed"):
        status, headers, body = get(url + path)
        assert status == 200
        assert wrapper.tag().encode() + b"</head>" in body, path
        assert int(headers["content-length"]) == len(body)
    # fragments and JSON pass through untouched
    assert get(url + "/fragment")[2] == b"<li>one item</li>"
    assert json.loads(get(url + "/api/items/3")[2]) == {"id": 3}


def test_etags_and_304_still_work_with_the_tag(shop: Any) -> None:
    url, _, _, _ = shop
    _, headers, _ = get(url + "/")
    etag = headers["etag"]
    assert "-pnb" in etag  # the injected page has its own validator
    status, _, body = get(url + "/", {"If-None-Match": etag})
    assert (status, body) == (304, b"")


def test_no_tag_while_monitoring_is_off(shop: Any) -> None:
    url, monitor, wrapper, _ = shop
    monitor.configure(enabled=False)
    try:
        _, _, body = get(url + "/")
        assert body == PAGE.encode()
    finally:
        monitor.configure(enabled=True)
    assert wrapper.tag().encode() in get(url + "/")[2]


def test_batches_on_requests_are_taken_and_answered_with_control(shop: Any) -> None:
    url, _, _, records = shop
    now_ms = time.time() * 1000
    batch = {
        "v": 1,
        "page": "/",
        "records": [{"kind": "vital", "name": "LCP", "value": 812.5, "t": now_ms}],
    }
    status, headers, body = get(url + "/api/items/9", {"X-Perfnb-Beacon": encode_header(batch)})
    assert (status, json.loads(body)) == (200, {"id": 9})
    assert json.loads(headers["x-perfnb-control"])["enabled"] is True
    wait_for(
        lambda: any(r.get("name") == "LCP" for r in records), timeout=10, what="the LCP record"
    )


def test_a_real_browser_reports_from_a_flask_page(shop: Any) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    del sync_api
    from chromium import launch

    url, _, _, records = shop
    with launch() as browser:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.click("#buy")
        page.wait_for_timeout(300)
        page.goto(url + "/fragment")  # leaving the page flushes what the beacon holds
        browser_records: Callable[[], list[Record]] = lambda: [  # noqa: E731
            r for r in list(records) if r.get("source") == "browser"
        ]
        wait_for(
            lambda: any(r["kind"] == "navigation" for r in browser_records()),
            timeout=20,
            what="a navigation record from the browser",
        )
        context.close()
    assert errors == []
    kinds = {r["kind"] for r in browser_records()}
    assert "navigation" in kinds
    # the page's own fetch was seen by the server with its route template
    assert any(r.get("route") == "/api/items/<int:item_id>" for r in records)
