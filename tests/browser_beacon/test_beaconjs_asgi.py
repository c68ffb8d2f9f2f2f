"""BeaconScript in-process: serving the script, writing the tag into pages, answering control."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from perfnb.errors import ConfigError
from perfnb.server import Monitor, PerfnbMiddleware
from perfnb.server.beacon import encode_header
from perfnb.server.beaconjs import BEACON_PATH, BeaconScript, beacon_source, script_tag

pytestmark = pytest.mark.anyio

PAGE = "<!doctype html><html><head><title>t</title></head><body><p>hi</p></body></html>"


def _app(tmp_path: Path) -> Starlette:
    page_file = tmp_path / "page.html"
    page_file.write_text(PAGE, encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def fragment(request: Request) -> Response:
        return HTMLResponse("<li>one card</li>")

    async def data(request: Request) -> Response:
        return JSONResponse({"ok": True, "seen": request.headers.get("x-perfnb-beacon")})

    async def missing(request: Request) -> Response:
        return HTMLResponse(PAGE, status_code=404)

    async def big(request: Request) -> Response:
        async def chunks() -> Any:
            yield b"<html><head></head><body>"
            for _ in range(40):
                yield b"x" * 1024
            yield b"</body></html>"

        return StreamingResponse(chunks(), media_type="text/html")

    async def own(request: Request) -> Response:
        return HTMLResponse(
            PAGE.replace("</head>", f'<script src="{BEACON_PATH}"></script></head>')
        )

    routes = [
        Route("/", page),
        Route("/fragment", fragment),
        Route("/data", data),
        Route("/missing", missing),
        Route("/big", big),
        Mount("/static", StaticFiles(directory=tmp_path)),
        Route("/own", own),
        Route("/post", page, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _config(body: str) -> dict[str, Any]:
    found = re.search(
        r'<script src="/_perfnb/beacon\.js\?v=\w+" data-perfnb="([^"]*)"></script>', body
    )
    assert found, body
    out: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def monitor() -> Monitor:
    return Monitor(service="shop")


async def test_serves_the_shipped_script_with_caching(tmp_path: Path, monitor: Monitor) -> None:
    async with _client(BeaconScript(_app(tmp_path), monitor=monitor)) as client:
        first = await client.get(BEACON_PATH)
        assert first.status_code == 200
        assert first.content == beacon_source()
        assert first.headers["content-type"].startswith("text/javascript")
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = await client.get(BEACON_PATH, headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        versioned = await client.get(f"{BEACON_PATH}?v={etag.strip(chr(34))}")
        assert "immutable" in versioned.headers["cache-control"]
        head = await client.head(BEACON_PATH)
        assert head.status_code == 200
        assert head.content == b""
        assert (await client.post(BEACON_PATH)).status_code == 405


async def test_writes_the_tag_with_the_page_config_before_head_end(
    tmp_path: Path, monitor: Monitor
) -> None:
    monitor.configure(kinds=["vital", "navigation"])
    app = BeaconScript(_app(tmp_path), monitor=monitor, sample=0.25, memory_every=30)
    async with _client(app) as client:
        response = await client.get("/")
    body = response.text
    assert response.headers["content-length"] == str(len(response.content))
    assert body.index("data-perfnb") < body.index("</head>")
    assert body.replace(app.tag(), "") == PAGE
    assert _config(body) == {
        "enabled": True,
        "kinds": ["navigation", "vital"],
        "frames": False,
        "sample": 0.25,
        "prefix": "/api/performance-metrics",
        "endpoint": "/api/performance-metrics/beacon",
        "header": 4096,
        "records": monitor.beacon_limits.records,
        "memory_every": 30.0,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fragment"),  # no </head>: a partial, not a page
        ("GET", "/data"),  # not HTML
        ("GET", "/missing"),  # not a 200
        ("HEAD", "/"),
        ("POST", "/post"),
        ("GET", "/own"),  # the page includes the beacon itself
        ("GET", "/big"),  # larger than max_html_bytes: streamed on untouched
    ],
)
async def test_leaves_other_responses_byte_identical(
    tmp_path: Path, monitor: Monitor, method: str, path: str
) -> None:
    bare = _app(tmp_path)
    wrapped = BeaconScript(bare, monitor=monitor, max_html_bytes=16 * 1024)
    async with _client(bare) as plain, _client(wrapped) as client:
        want = await plain.request(method, path)
        got = await client.request(method, path)
    assert got.status_code == want.status_code
    assert got.content == want.content
    assert got.headers.multi_items() == want.headers.multi_items()


async def test_compressed_pages_are_left_alone(tmp_path: Path, monitor: Monitor) -> None:
    bare = GZipMiddleware(_app(tmp_path), minimum_size=10)
    async with _client(BeaconScript(bare, monitor=monitor)) as client:
        response = await client.get("/", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == PAGE


async def test_no_tag_while_monitoring_is_off(tmp_path: Path, monitor: Monitor) -> None:
    monitor.configure(enabled=False)
    async with _client(BeaconScript(_app(tmp_path), monitor=monitor)) as client:
        response = await client.get("/")
    assert response.text == PAGE


async def test_etags_keep_conditional_requests_working(tmp_path: Path, monitor: Monitor) -> None:
    bare = _app(tmp_path)
    async with _client(bare) as plain, _client(BeaconScript(bare, monitor=monitor)) as client:
        app_etag = (await plain.get("/static/page.html")).headers["etag"]
        first = await client.get("/static/page.html")
        etag = first.headers["etag"]
        assert etag != app_etag
        assert etag.startswith(app_etag[:-1] + "-pnb")
        assert "data-perfnb" in first.text
        same = await client.get("/static/page.html", headers={"if-none-match": etag})
        assert same.status_code == 304
        assert same.headers["etag"] == etag
        # A new page config makes a new page: the browser's copy is stale.
        monitor.configure(kinds=["vital"])
        changed = await client.get("/static/page.html", headers={"if-none-match": etag})
    assert changed.status_code == 200
    assert _config(changed.text)["kinds"] == ["vital"]
    assert changed.headers["etag"] != etag


async def test_requests_carrying_a_batch_are_answered_with_the_control_state(
    tmp_path: Path,
) -> None:
    inner = PerfnbMiddleware(_app(tmp_path), service="shop")
    app = BeaconScript(inner, monitor=inner.monitor)
    batch = encode_header(
        {
            "v": 1,
            "page": "/",
            "records": [
                {
                    "kind": "vital",
                    "name": "LCP",
                    "value": 1.5,
                    "unit": "ms",
                    "t": inner.monitor.clock() * 1000,
                }
            ],
        }
    )
    async with _client(app) as client:
        plain = await client.get("/data")
        carried = await client.get("/data", headers={"x-perfnb-beacon": batch})
        app.frames = True
        inner.monitor.configure(kinds=["vital"])
        later = await client.get("/data", headers={"x-perfnb-beacon": batch})
    assert "x-perfnb-control" not in plain.headers
    assert json.loads(carried.headers["x-perfnb-control"]) == {
        "enabled": True,
        "kinds": None,
        "frames": False,
    }
    assert json.loads(later.headers["x-perfnb-control"]) == {
        "enabled": True,
        "kinds": ["vital"],
        "frames": True,
    }
    assert carried.json() == {"ok": True, "seen": None}  # the app never sees the batch


async def test_other_scopes_pass_straight_through(monitor: Monitor) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing() -> Any:
        return {}

    async def ignore(message: Any) -> None:
        return None

    await BeaconScript(app, monitor=monitor)({"type": "lifespan"}, nothing, ignore)
    await BeaconScript(app, monitor=monitor)(
        {"type": "websocket", "path": BEACON_PATH}, nothing, ignore
    )
    assert seen == ["lifespan", "websocket"]


def test_options_are_checked_by_name(monitor: Monitor) -> None:
    with pytest.raises(ConfigError, match="sample: got 2"):
        script_tag(monitor, sample=2)
    with pytest.raises(ConfigError, match="memory_every: got -1"):
        BeaconScript(Starlette(), monitor=monitor, memory_every=-1)
    with pytest.raises(ConfigError, match=r"path: got 'beacon\.js'"):
        BeaconScript(Starlette(), monitor=monitor, path="beacon.js")


def test_the_tag_escapes_its_config(monitor: Monitor) -> None:
    tag = script_tag(monitor, version="x")
    assert '"' not in tag.split('data-perfnb="', 1)[1].rsplit('"', 1)[0]
