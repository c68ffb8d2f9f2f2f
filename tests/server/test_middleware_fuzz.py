"""Hostile input never reaches into the app: random and oversized headers, both middlewares."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfnb.server import Monitor, PerfnbMiddleware, PerfnbWSGIMiddleware

header_bytes = st.one_of(
    st.binary(max_size=64),
    # oversized: past the beacon cap and any sane header size
    st.tuples(st.integers(9000, 70000), st.binary(max_size=8)).map(lambda t: b"A" * t[0] + t[1]),
    st.sampled_from([b"", b" ", b"run-1", b"sid=abc; sid=", b"=;=;=", b"\xff\xfe", b"%%%"]),
)
names = st.sampled_from(
    [b"x-perfnb-run", b"x-perfnb-beacon", b"cookie", b"content-length", b"x-app-timing", b"x-a"]
)
headers = st.lists(st.tuples(names, header_bytes), max_size=8)
#: Beacon headers the wrapped apps saw: must stay empty.
BEACONS_SEEN: list[object] = []


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with a digest of the request headers it saw; sets Server-Timing as asked."""
    seen = [(k, v) for k, v in scope["headers"] if k != b"x-perfnb-beacon"]
    if scope.get("wrapped"):
        BEACONS_SEEN.extend(k for k, _ in scope["headers"] if k == b"x-perfnb-beacon")
    body = hashlib.sha256(repr(seen).encode()).hexdigest().encode()
    out = [(b"content-type", b"text/plain")]
    out += [(b"server-timing", v) for k, v in scope["headers"] if k == b"x-app-timing"]
    await send({"type": "http.response.start", "status": 207, "headers": out})
    await send({"type": "http.response.body", "body": body})


def _scope(request_headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/x",
        "raw_path": b"/x",
        "root_path": "",
        "query_string": b"",
        "headers": request_headers,
        "client": ("10.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def _call(app: Any, request_headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope(list(request_headers))
    scope["wrapped"] = app is not echo_app
    await app(scope, receive, send)
    return sent


MONITOR = Monitor()
WRAPPED = PerfnbMiddleware(echo_app, monitor=MONITOR, session_cookie="sid")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers)
def test_asgi_status_body_and_app_headers_unchanged(
    request_headers: list[tuple[bytes, bytes]],
) -> None:
    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bare = await _call(echo_app, request_headers)
        wrapped = await _call(WRAPPED, request_headers)
        WRAPPED.flush()
        return bare, wrapped

    bare, wrapped = asyncio.run(both())
    assert wrapped[0]["status"] == bare[0]["status"] == 207
    assert wrapped[1]["body"] == bare[1]["body"]
    *app_headers, (name, value) = wrapped[0]["headers"]
    assert app_headers == bare[0]["headers"]
    assert name == b"server-timing"
    assert value.startswith(b"app;dur=")
    assert WRAPPED.recorder.counters["internal_errors"] == 0
    assert BEACONS_SEEN == []


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("wrapped"):
        BEACONS_SEEN.extend(k for k in environ if k == "HTTP_X_PERFNB_BEACON")
    seen = sorted((k, v) for k, v in environ.items() if k.startswith("HTTP_") and "BEACON" not in k)
    out = [("Content-Type", "text/plain")]
    if "HTTP_X_APP_TIMING" in environ:
        out.append(("Server-Timing", environ["HTTP_X_APP_TIMING"]))
    start_response("207 Multi-Status", out)
    return [hashlib.sha256(repr(seen).encode()).hexdigest().encode()]


WSGI = PerfnbWSGIMiddleware(echo_wsgi, session_cookie="sid")


def _environ(request_headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "REMOTE_ADDR": "::1"}
    for name, value in request_headers:
        key = name.decode().upper().replace("-", "_")
        key = key if key == "CONTENT_LENGTH" else "HTTP_" + key
        environ[key] = value.decode("latin-1")
    return environ


@settings(max_examples=100, deadline=None)
@given(headers)
def test_wsgi_status_body_and_app_headers_unchanged(
    request_headers: list[tuple[bytes, bytes]],
) -> None:
    calls: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        calls.append((status, response_headers))

    bare_body = b"".join(echo_wsgi(_environ(request_headers), start_response))
    environ = _environ(request_headers)
    environ["wrapped"] = True
    result = WSGI(environ, start_response)
    body = b"".join(result)
    result.close()  # type: ignore[attr-defined]
    (bare_status, bare_headers), (status, wrapped_headers) = calls
    assert (status, body) == (bare_status, bare_body)
    *app_headers, (name, value) = wrapped_headers
    assert app_headers == bare_headers
    assert name == "Server-Timing"
    assert value.startswith("app;dur=")
    assert WSGI.recorder.counters["internal_errors"] == 0
    assert BEACONS_SEEN == []
