"""The demo app as perfnb sees it: every route recorded under its template, Server-Timing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from perfnb.collect import parse_server_timing
from perfnb.demo import create_app
from perfnb.schema import Record, validate_record
from perfnb.server import Monitor

pytestmark = pytest.mark.slow

Serve = Callable[[Any], AbstractContextManager[str]]


def _templates(tmp_path: Path) -> set[tuple[str, str]]:
    app: Any = create_app(db_path=tmp_path / "routes.db", middleware=False)
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        out |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return out


def _exercise(client: httpx.Client) -> list[httpx.Response]:
    """One request or more on every route of the app, successes and failures."""
    seen: list[httpx.Response] = []

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        response = client.request(method, path, **kw)
        seen.append(response)
        return response

    call("GET", "/")
    call("GET", "/static/app.js")
    call("GET", "/api/health")
    call("GET", "/api/cards")  # 401 before signing in
    guest = call("POST", "/api/guests", json={"name": "mon"}).json()
    call("POST", "/api/logout")
    call("POST", "/api/login", json={"user_id": guest["user"]["id"], "code": guest["code"]})
    card = call("POST", "/api/cards", json={"title": "t"}).json()
    call("GET", "/api/cards")
    call("GET", f"/api/cards/{card['id']}")
    call("PUT", f"/api/cards/{card['id']}", json={"body": "b", "version": 1})
    call("PUT", f"/api/cards/{card['id']}", json={"body": "c", "version": 1})  # 409
    call("POST", "/api/cards/bulk", json={"cards": [{"title": "a"}, {"title": "b"}]})
    call("GET", "/api/cards/export")
    call("DELETE", f"/api/cards/{card['id']}")
    call("GET", "/api/cards/nope")  # 400
    conv = call("POST", "/api/conversations", json={"title": "c"}).json()
    call("GET", "/api/conversations")
    call("POST", f"/api/conversations/{conv['id']}/messages", json={"body": "hi"})
    call("GET", f"/api/conversations/{conv['id']}/messages")
    call("POST", "/api/presence", json={"status": "active"})
    call("GET", "/api/presence")
    call("GET", "/api/poll")
    call("GET", "/api/poll", params={"since": 0})
    call("GET", "/api/admin/faults")
    call("POST", "/api/admin/faults", json={"error_rate": 1.0, "routes": ["/api/presence"]})
    call("GET", "/api/presence")  # injected 500
    call("DELETE", "/api/admin/faults")
    call("GET", "/api/admin/runs")
    call("DELETE", "/api/admin/runs/nobody")
    call("GET", "/no/such/page")  # 404, the unmatched bucket
    return seen


def test_every_route_is_recorded_under_its_template_with_server_timing(
    serve: Serve, waiter: Callable[..., None], tmp_path: Path
) -> None:
    records: list[Record] = []
    monitor = Monitor(service="demo", sink=records.append)
    app = create_app(db_path=tmp_path / "demo.db", monitor=monitor)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        responses = _exercise(client)

        def http() -> list[Record]:
            return [r for r in records if r["kind"] == "http" and r["source"] == "server"]

        waiter(lambda: len(http()) >= len(responses), timeout=10, what="a record per request")
    statuses = {r.status_code for r in responses}
    assert {200, 201, 204, 400, 401, 404, 409, 500} <= statuses
    for response in responses:
        names = [m.name for m in parse_server_timing(response.headers.get("server-timing", ""))]
        assert "app" in names, (response.request.url, response.headers)
    recorded = {(r["method"], r["route"]) for r in http()}
    assert _templates(tmp_path) <= recorded
    assert {r["route"] for r in http()} - {t for _, t in _templates(tmp_path)} == {"<unmatched>"}
    for rec in records:
        validate_record(rec)
        assert rec.get("service") == "demo"
    # DB time is attributed to the routes that use the database, and only to them.
    by_route = {(r["method"], r["route"]): r for r in http() if r.get("status", 0) < 300}
    assert by_route[("GET", "/api/cards")].get("db_ms", 0) > 0
    assert by_route[("GET", "/")].get("db_ms") in (None, 0)


def test_slow_db_shows_in_the_db_span_and_load_is_tagged(
    serve: Serve, waiter: Callable[..., None], tmp_path: Path
) -> None:
    records: list[Record] = []
    monitor = Monitor(service="demo", sink=records.append)
    app = create_app(db_path=tmp_path / "demo.db", monitor=monitor)
    run = {"X-Perfnb-Run": "slow-run"}
    with serve(app) as url, httpx.Client(base_url=url, timeout=30, headers=run) as client:
        client.post("/api/guests", json={})
        client.post("/api/admin/faults", json={"slow_db_ms": 120})
        response = client.get("/api/cards")
        client.delete("/api/admin/faults")
        waiter(
            lambda: any(r.get("route") == "/api/cards" for r in records),
            timeout=10,
            what="the /api/cards record",
        )
    spans = {m.name: m.dur for m in parse_server_timing(response.headers["server-timing"])}
    assert spans["db"] >= 240  # two delayed DB calls: session lookup and the page
    rec = next(r for r in records if r.get("route") == "/api/cards")
    assert rec.get("db_ms", 0) >= 240
    assert rec.get("run_id") == "slow-run"
