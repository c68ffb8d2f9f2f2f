"""The demo app end to end: every route on a real uvicorn, the front end, tenants, admin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from perfnb.demo import create_app

pytestmark = pytest.mark.slow

# Every (method, template) the app serves; test_route_table_is_covered keeps it honest.
COVERED = {
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/api/health"),
    ("POST", "/api/guests"),
    ("POST", "/api/login"),
    ("POST", "/api/logout"),
    ("GET", "/api/cards"),
    ("POST", "/api/cards"),
    ("POST", "/api/cards/bulk"),
    ("GET", "/api/cards/export"),
    ("GET", "/api/cards/{card_id}"),
    ("PUT", "/api/cards/{card_id}"),
    ("DELETE", "/api/cards/{card_id}"),
    ("GET", "/api/conversations"),
    ("POST", "/api/conversations"),
    ("GET", "/api/conversations/{conversation_id}/messages"),
    ("POST", "/api/conversations/{conversation_id}/messages"),
    ("POST", "/api/presence"),
    ("GET", "/api/presence"),
    ("GET", "/api/poll"),
    ("GET", "/api/admin/faults"),
    ("POST", "/api/admin/faults"),
    ("DELETE", "/api/admin/faults"),
    ("GET", "/api/admin/runs"),
    ("DELETE", "/api/admin/runs/{run_id}"),
}


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app: Any = create_app(db_path=tmp_path / "demo.db", middleware=False)
    out = set()
    for route in app.routes:
        assert isinstance(route, Route)
        out |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return out


def test_route_table_is_covered(tmp_path: Path) -> None:
    assert app_routes(tmp_path) == COVERED


def test_front_end_page_and_script_load(demo: Any) -> None:
    with demo.client() as client:
        page = client.get("/")
        script = client.get("/static/app.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"></script>' in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "/api/poll" in script.text
    assert "visibilitychange" in script.text


def test_guest_logout_and_login_again(demo: Any) -> None:
    with demo.client() as client:
        created = client.post("/api/guests", json={"name": "ada"})
        assert created.status_code == 201
        user, code = created.json()["user"], created.json()["code"]
        assert user["name"] == "ada"
        assert client.get("/api/cards").status_code == 200
        assert client.post("/api/logout").status_code == 204
        assert client.get("/api/cards").status_code == 401
        wrong = client.post("/api/login", json={"user_id": user["id"], "code": code + "x"})
        assert wrong.status_code == 401
        again = client.post("/api/login", json={"user_id": user["id"], "code": code})
        assert again.status_code == 200
        assert again.json()["user"]["id"] == user["id"]
        assert client.get("/api/cards").status_code == 200


def test_api_needs_a_session(demo: Any) -> None:
    with demo.client() as client:
        for method, path in [("GET", "/api/cards"), ("GET", "/api/poll"), ("GET", "/api/presence")]:
            assert client.request(method, path).status_code == 401
        assert client.get("/api/health").json()["status"] == "ok"


def test_cards_create_edit_delete_with_versions(demo: Any) -> None:
    with demo.guest() as client:
        card = client.post("/api/cards", json={"title": "Plan", "body": "draft"}).json()
        assert (card["title"], card["body"], card["version"]) == ("Plan", "draft", 1)
        path = f"/api/cards/{card['id']}"
        assert client.get(path).json() == card
        edited = client.put(path, json={"body": "final", "version": 1})
        assert edited.status_code == 200
        assert (edited.json()["title"], edited.json()["body"], edited.json()["version"]) == (
            "Plan",
            "final",
            2,
        )
        stale = client.put(path, json={"body": "lost update", "version": 1})
        assert stale.status_code == 409
        assert stale.json()["current"]["body"] == "final"
        assert client.delete(path).status_code == 204
        assert client.get(path).status_code == 404
        assert client.delete(path).status_code == 404
        assert client.put(path, json={"title": "x"}).status_code == 404


def test_card_pages(demo: Any) -> None:
    with demo.client(headers={"X-Perfnb-Run": "pages"}) as client:
        client.post("/api/guests", json={})
        ids = client.post(
            "/api/cards/bulk", json={"cards": [{"title": f"c{i}"} for i in range(7)]}
        ).json()["ids"]
        first = client.get("/api/cards", params={"limit": 5}).json()
        rest = client.get("/api/cards", params={"limit": 5, "after": first["next"]}).json()
    assert [c["id"] for c in first["cards"] + rest["cards"]] == ids
    assert rest["next"] is None


def test_bulk_import_and_export(demo: Any) -> None:
    with demo.client(headers={"X-Perfnb-Run": "bulk"}) as client:
        client.post("/api/guests", json={})
        cards = [{"title": f"card {i}", "body": "x" * i} for i in range(50)]
        imported = client.post("/api/cards/bulk", json={"cards": cards})
        assert imported.status_code == 201
        assert imported.json()["created"] == 50
        exported = client.get("/api/cards/export").json()
        assert exported["count"] == 50
        assert [c["title"] for c in exported["cards"]] == [c["title"] for c in cards]
        as_csv = client.get("/api/cards/export", params={"format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert len(as_csv.text.strip().splitlines()) == 51


def test_conversations_and_messages(demo: Any) -> None:
    with demo.guest() as client:
        conv = client.post("/api/conversations", json={"title": "release"}).json()
        path = f"/api/conversations/{conv['id']}/messages"
        for text in ["hello", "ship it?"]:
            assert client.post(path, json={"body": text}).status_code == 201
        listed = client.get("/api/conversations").json()["conversations"]
        assert conv["id"] in [c["id"] for c in listed]
        messages = client.get(path).json()["messages"]
        assert [m["body"] for m in messages] == ["hello", "ship it?"]
        after = client.get(path, params={"after": messages[0]["id"]}).json()["messages"]
        assert [m["body"] for m in after] == ["ship it?"]
        missing = "/api/conversations/999999/messages"
        assert client.get(missing).status_code == 404
        assert client.post(missing, json={"body": "x"}).status_code == 404


def test_presence_lists_who_is_around(demo: Any) -> None:
    with (
        demo.client(headers={"X-Perfnb-Run": "presence"}) as a,
        demo.client(headers={"X-Perfnb-Run": "presence"}) as b,
    ):
        a.post("/api/guests", json={"name": "ann"})
        b.post("/api/guests", json={"name": "bob"})
        assert a.post("/api/presence", json={"status": "active", "location": "cards"}).is_success
        assert b.post("/api/presence", json={"status": "idle"}).is_success
        users = {u["name"]: u["status"] for u in a.get("/api/presence").json()["users"]}
    assert users == {"ann": "active", "bob": "idle"}


def test_poll_returns_changes_since_the_cursor(demo: Any) -> None:
    with (
        demo.client(headers={"X-Perfnb-Run": "poll"}) as a,
        demo.client(headers={"X-Perfnb-Run": "poll"}) as b,
    ):
        a.post("/api/guests", json={})
        b.post("/api/guests", json={})
        first = b.get("/api/poll").json()
        assert first["changes"] == []
        assert first["runaway"] is False
        assert (first["interval_ms"], first["idle_interval_ms"]) == (2000, 5000)
        card = a.post("/api/cards", json={"title": "news"}).json()
        a.delete(f"/api/cards/{card['id']}")
        conv = a.post("/api/conversations", json={"title": "chat"}).json()
        a.post(f"/api/conversations/{conv['id']}/messages", json={"body": "hi"})
        news = b.get("/api/poll", params={"since": first["cursor"]}).json()
        seen = [(c["entity"], c["op"]) for c in news["changes"]]
        assert seen == [
            ("card", "upsert"),
            ("card", "delete"),
            ("conversation", "upsert"),
            ("message", "upsert"),
        ]
        assert news["changes"][0]["data"]["title"] == "news"
        quiet = b.get("/api/poll", params={"since": news["cursor"]}).json()
        assert quiet["changes"] == []
        assert quiet["cursor"] >= news["cursor"]
        paged = b.get("/api/poll", params={"since": first["cursor"], "limit": 3}).json()
        assert paged["more"] is True
        assert len(paged["changes"]) == 3
        future = b.get("/api/poll", params={"since": 10**12}).json()
        assert future["reset"] is True


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/api/cards", {"json": {"title": ""}}, "title"),
        ("POST", "/api/cards", {"json": {"body": "no title"}}, "title"),
        ("POST", "/api/cards", {"content": b"{not json"}, "body"),
        ("POST", "/api/cards", {"json": [1, 2]}, "body"),
        ("GET", "/api/cards", {"params": {"limit": "lots"}}, "limit"),
        ("GET", "/api/cards", {"params": {"limit": "0"}}, "limit"),
        ("GET", "/api/cards/abc", {}, "card_id"),
        ("PUT", "/api/cards/1", {"json": {"version": "1"}}, "version"),
        ("POST", "/api/cards/bulk", {"json": {"cards": []}}, "cards"),
        (
            "POST",
            "/api/cards/bulk",
            {"json": {"cards": [{"title": "a"}, {"t": 1}]}},
            "cards[1].title",
        ),
        ("GET", "/api/cards/export", {"params": {"format": "xml"}}, "format"),
        ("POST", "/api/presence", {"json": {"status": "asleep"}}, "status"),
        ("GET", "/api/poll", {"params": {"since": "-1"}}, "since"),
        ("POST", "/api/conversations/x/messages", {"json": {"body": "a"}}, "conversation_id"),
        ("GET", "/api/cards", {"headers": {"X-Perfnb-Run": "has space"}}, "X-Perfnb-Run"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    demo: Any, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    with demo.guest() as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert field.split("[")[0] in response.json()["error"]


def test_oversized_body_is_refused(demo: Any) -> None:
    with demo.guest() as client:
        response = client.post("/api/cards/bulk", content=b"x" * (17 * 1024 * 1024))
        assert response.status_code == 413
        assert client.get("/api/health").status_code == 200


def test_load_run_data_stays_in_its_tenant_and_is_removed(demo: Any) -> None:
    run = {"X-Perfnb-Run": "run-42"}
    with demo.guest() as real, demo.client(headers=run) as load:
        load.post("/api/guests", json={"name": "load-user"})
        real_card = real.post("/api/cards", json={"title": "real"}).json()
        load_card = load.post("/api/cards", json={"title": "load"}).json()
        load.post("/api/conversations", json={"title": "load chat"})
        real_titles = {c["title"] for c in real.get("/api/cards/export").json()["cards"]}
        load_titles = {c["title"] for c in load.get("/api/cards/export").json()["cards"]}
        assert "load" not in real_titles
        assert "real" in real_titles
        assert load_titles == {"load"}
        assert real.get(f"/api/cards/{load_card['id']}").status_code == 404
        assert load.get(f"/api/cards/{real_card['id']}").status_code == 404
        # A load session is no session for real traffic, and the reverse.
        load_cookies = dict(load.cookies)
        with demo.client(cookies=load_cookies) as stolen:
            assert stolen.get("/api/cards").status_code == 401
        with demo.client() as admin:
            assert admin.get("/api/admin/runs").json()["runs"]["run-42"] == 1
            removed = admin.delete("/api/admin/runs/run-42").json()
            assert removed["run_id"] == "run-42"
            assert removed["removed"]["cards"] == 1
            assert removed["removed"]["users"] == 1
            assert removed["removed"]["conversations"] == 1
            assert "run-42" not in admin.get("/api/admin/runs").json()["runs"]
            bad = admin.delete("/api/admin/runs/bad%20id")
            assert bad.status_code == 400
            assert bad.json()["field"] == "run_id"
        assert load.get("/api/cards").status_code == 401  # its session went with it
        assert real.get(f"/api/cards/{real_card['id']}").status_code == 200


def test_demo_app_refuses_a_non_loopback_host() -> None:
    from perfnb.demo.app import main_demo_app

    assert main_demo_app(["--host", "0.0.0.0", "--port", "8123"]) == 2


def test_unknown_paths_are_404(demo: Any) -> None:
    with demo.client() as client:
        assert client.get("/wp-login.php").status_code == 404
        assert client.get("/api/nothing").status_code == 404


def _admin_calls(
    app: Any, client: tuple[str, int], calls: list[tuple[str, dict[str, str]]]
) -> list[httpx.Response]:
    """GET /api/admin/faults in-process as ``client``, once per (method, headers)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            return [await http.request(m, "/api/admin/faults", headers=h) for m, h in calls]

    return asyncio.run(run())


def test_admin_is_loopback_only_without_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PERFNB_TOKEN", raising=False)
    app = create_app(db_path=tmp_path / "demo.db", middleware=False, admin_token=None)
    outside = _admin_calls(app, ("10.1.2.3", 5000), [("GET", {}), ("DELETE", {})])
    assert [(r.status_code, r.content) for r in outside] == [(401, b""), (401, b"")]
    inside = _admin_calls(
        app, ("127.0.0.1", 5000), [("GET", {}), ("GET", {"X-Forwarded-For": "10.0.0.1"})]
    )
    assert inside[0].status_code == 200
    assert inside[0].json()["error_rate"] == 0
    assert inside[1].status_code == 401  # behind a proxy everyone looks local


def test_admin_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    app = create_app(db_path=tmp_path / "demo.db", middleware=False, admin_token="s3cret")
    answers = _admin_calls(
        app,
        ("10.1.2.3", 5000),
        [
            ("GET", {}),
            ("GET", {"Authorization": "Bearer nope"}),
            ("GET", {"Authorization": "Bearer s3cret"}),
        ],
    )
    assert [r.status_code for r in answers] == [401, 401, 200]


def test_templates_list_every_route(tmp_path: Path) -> None:
    from perfnb.demo.templates import TEMPLATES, route_template

    assert set(TEMPLATES) == {t for _, t in app_routes(tmp_path)}
    assert route_template("/api/conversations/3/messages") == (
        "/api/conversations/{conversation_id}/messages"
    )
    assert route_template("/api/cards/bulk") == "/api/cards/bulk"
    assert route_template("/api/cards/5?x=1") == "/api/cards/{card_id}"
