"""Route templates from Starlette (mounts too), Flask and the Django hook."""

from __future__ import annotations

from typing import Any

from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount, Route, Router

from perfnb.server.routes import (
    DjangoRouteMiddleware,
    StarletteRouteResolver,
    flask_route,
    install_flask_hook,
    starlette_route,
)


def _endpoint(request: Any) -> None:
    return None


def test_starlette_template_drops_converters() -> None:
    route = Route("/cards/{card_id:int}", _endpoint)
    assert starlette_route({"route": route}) == "/cards/{card_id}"
    assert starlette_route({}) is None


def test_override_key_wins() -> None:
    route = Route("/cards/{card_id}", _endpoint)
    assert starlette_route({"route": route, "perfnb.route": "/custom"}) == "/custom"


def test_nested_mounts_with_parameters_resolve_to_templates() -> None:
    inner = Route("/items/{item_id}", _endpoint)
    app = Starlette(
        routes=[
            Route("/", _endpoint),
            Mount("/api", routes=[Mount("/v{version}", routes=[inner])]),
        ]
    )
    resolve = StarletteRouteResolver(app)
    scope = {"route": inner, "root_path": "/api/v7", "app_root_path": ""}
    assert resolve(scope) == "/api/v{version}/items/{item_id}"
    # A second version number is the same template (no raw values leak).
    scope = {"route": inner, "root_path": "/api/v8", "app_root_path": ""}
    assert resolve(scope) == "/api/v{version}/items/{item_id}"


def test_unknown_mount_prefix_is_unmatched_rather_than_raw() -> None:
    inner = Route("/items/{item_id}", _endpoint)
    resolve = StarletteRouteResolver(Router(routes=[inner]))
    scope = {"route": inner, "root_path": "/elsewhere", "app_root_path": ""}
    assert resolve(scope) is None


def test_flask_rule_is_handed_over_by_the_hook() -> None:
    app = Flask("routes")

    @app.route("/cards/<int:card_id>")
    def card(card_id: int) -> str:
        return str(card_id)

    assert install_flask_hook(app.wsgi_app)
    assert install_flask_hook(app)  # twice: one hook
    assert app.before_request_funcs[None].count(app.before_request_funcs[None][0]) == 1
    seen: dict[str, Any] = {}
    inner = app.wsgi_app

    def capture(environ: dict[str, Any], start_response: Any) -> Any:
        result = inner(environ, start_response)
        seen.clear()
        seen.update(environ)
        return result

    app.wsgi_app = capture  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/cards/42").status_code == 200
    assert flask_route(seen) == "/cards/<int:card_id>"
    assert client.get("/nowhere").status_code == 404
    assert flask_route(seen) is None


def test_hook_leaves_non_flask_apps_alone() -> None:
    assert not install_flask_hook(lambda environ, start_response: [])


def test_django_hook_writes_meta_and_scope() -> None:
    class Match:
        route = "^cards/(?P<pk>[0-9]+)/$"

    class Request:
        def __init__(self) -> None:
            self.META: dict[str, str] = {}
            self.scope: dict[str, str] = {}
            self.resolver_match = Match()

    request = Request()
    hook = DjangoRouteMiddleware(lambda r: "response")
    assert hook(request) == "response"
    hook.process_view(request, None, (), {})
    assert request.META["perfnb.route"] == "/cards/(?P<pk>[0-9]+)/"
    assert request.scope["perfnb.route"] == request.META["perfnb.route"]
