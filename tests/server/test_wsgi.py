"""The WSGI middleware around a real Flask app under wsgiref (the standard library's server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, Response, abort, send_file, stream_with_context
from mw_support import raw_request, serve_wsgi, server_timing, split, wait_for

from perfnb.schema import Record, validate_record
from perfnb.server import PerfnbWSGIMiddleware, timing
from perfnb.server.beacon import encode_header

pytestmark = pytest.mark.slow


def flask_app(data: Path) -> Flask:
    app = Flask("shop")

    @app.route("/cards/<int:card_id>")
    def card(card_id: int) -> str:
        with timing("render"):
            return f"card {card_id}"

    @app.route("/json")
    def json() -> dict[str, object]:
        return {"a": [1, 2], "b": "ü"}

    @app.route("/file")
    def file() -> Response:
        return send_file(data, conditional=True, etag=True)

    @app.route("/stream")
    def stream() -> Response:
        def parts() -> Iterator[str]:
            for index in range(3):
                yield f"part {index}\n"

        return Response(stream_with_context(parts()), mimetype="text/plain")

    @app.route("/teapot")
    def teapot() -> str:
        abort(418)

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("view failed")

    @app.route("/echo", methods=["POST"])
    def echo() -> bytes:
        from flask import request

        return request.get_data()

    @app.route("/headers")
    def headers() -> str:
        from flask import request

        return ",".join(sorted(k.lower() for k, _ in request.headers.items()))

    @app.errorhandler(RuntimeError)
    def on_error(exc: Exception) -> tuple[str, int]:
        return "handled", 500

    return app


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, list[Record]]]:
    data = tmp_path_factory.mktemp("files") / "data.bin"
    data.write_bytes(bytes(range(256)) * 16)
    records: list[Record] = []
    plain = flask_app(data)
    monitored = flask_app(data)
    monitored.wsgi_app = PerfnbWSGIMiddleware(  # type: ignore[method-assign]
        monitored.wsgi_app, service="flask", sink=records.append
    )
    with serve_wsgi(plain) as plain_port, serve_wsgi(monitored) as perfnb_port:
        yield plain_port, perfnb_port, records


REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/cards/42", {}, b""),
    ("HEAD", "/cards/42", {}, b""),
    ("GET", "/json", {}, b""),
    ("GET", "/file", {}, b""),
    ("GET", "/file", {"Range": "bytes=5-9"}, b""),
    ("GET", "/stream", {}, b""),
    ("GET", "/teapot", {}, b""),
    ("GET", "/boom", {}, b""),
    ("POST", "/echo", {}, b"some body bytes"),
    ("GET", "/nowhere", {}, b""),
    ("PUT", "/cards/1", {}, b""),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), REQUESTS)
def test_flask_bytes_unchanged(
    ports: tuple[int, int, list[Record]],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    plain_port, perfnb_port, _ = ports
    without = raw_request(plain_port, method, path, headers, body)
    with_mw = raw_request(perfnb_port, method, path, headers, body)
    assert split(with_mw) == split(without)
    assert server_timing(without) == []
    (value,) = server_timing(with_mw)
    assert value.startswith(b"app;dur=")


def test_etag_304(ports: tuple[int, int, list[Record]]) -> None:
    plain_port, perfnb_port, _ = ports
    first = raw_request(perfnb_port, "GET", "/file")
    etag = next(
        line.split(b":", 1)[1].strip().decode()
        for line in first.split(b"\r\n")
        if line.lower().startswith(b"etag:")
    )
    without = raw_request(plain_port, "GET", "/file", {"If-None-Match": etag})
    with_mw = raw_request(perfnb_port, "GET", "/file", {"If-None-Match": etag})
    assert without.startswith(b"HTTP/1.0 304")
    assert split(with_mw) == split(without)


def test_flask_records(ports: tuple[int, int, list[Record]]) -> None:
    _, perfnb_port, records = ports
    records.clear()
    raw_request(perfnb_port, "GET", "/cards/7", {"X-Perfnb-Run": "run-2"})
    raw_request(perfnb_port, "GET", "/stream")
    raw_request(perfnb_port, "GET", "/boom")
    raw_request(perfnb_port, "GET", "/wp-login.php")
    wait_for(lambda: len([r for r in records if r["kind"] in ("http", "stream")]) >= 4)
    by_route = {r["route"]: r for r in records if r["kind"] in ("http", "stream")}
    for record in by_route.values():
        validate_record(record)
    card = by_route["/cards/<int:card_id>"]
    assert (card["status"], card["run_id"], card["service"]) == (200, "run-2", "flask")
    assert card["response_bytes"] == len(b"card 7")
    assert by_route["/stream"]["kind"] == "stream"
    assert by_route["/stream"]["messages_out"] == 3
    assert by_route["/boom"]["status"] == 500
    assert by_route["<unmatched>"]["status"] == 404


def test_beacon_header_is_taken_and_hidden(ports: tuple[int, int, list[Record]]) -> None:
    _, perfnb_port, _records = ports
    batch = {
        "v": 1,
        "page": "/",
        "records": [{"kind": "vital", "name": "LCP", "value": 9.0, "t": 0}],
    }
    response = raw_request(
        perfnb_port, "GET", "/headers", {"X-Perfnb-Beacon": encode_header(batch), "X-Other": "1"}
    )
    body = split(response)[1]
    assert b"x-other" in body
    assert b"x-perfnb-beacon" not in body


def test_wsgi_error_outside_flask_is_recorded_and_reraised() -> None:
    records: list[Record] = []

    def broken(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise KeyError("gone")

    app = PerfnbWSGIMiddleware(broken, sink=records.append)
    with pytest.raises(KeyError):
        app({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    http = [r for r in records if r["kind"] == "http"]
    assert [(r["status"], r["error_type"]) for r in http] == [(500, "KeyError")]
