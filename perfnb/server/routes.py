"""Route templates: which route of the app served a request, never its raw path.

A resolver is asked *after* the app has handled the request, when the framework
has written its routing decision somewhere the middleware can see it:

- Starlette and FastAPI put the matched route object in ``scope["route"]``; its
  ``path_format`` is the template (``/cards/{card_id}``). Requests that went
  through a ``Mount`` get the mount's template in front (``/api`` +
  ``/cards/{card_id}``): the raw mount prefix the router consumed is mapped back
  to the mount's template by walking the app's route table once per prefix.
- Flask: :func:`install_flask_hook` adds a ``before_request`` function that
  copies ``request.url_rule.rule`` (the template, ``/cards/<int:card_id>``) into
  the WSGI environ; the WSGI middleware installs it by itself when it wraps a
  Flask app's ``wsgi_app``.
- Any framework, or the app itself, may set ``scope["perfnb.route"]`` /
  ``environ["perfnb.route"]`` to the template; that wins over everything else.
  :class:`DjangoRouteMiddleware` does this for Django.

A resolver returns ``None`` when no route matched (a 404, a scanner's probe);
the middleware then records the request under :data:`UNMATCHED`, one bucket, so
the number of distinct routes stays bounded by the app's route table.

>>> from starlette.routing import Route
>>> starlette_route({"route": Route("/cards/{card_id:int}", lambda r: None)})
'/cards/{card_id}'
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, Final

__all__ = [
    "OVERFLOW",
    "UNMATCHED",
    "AsgiRouteResolver",
    "DjangoRouteMiddleware",
    "StarletteRouteResolver",
    "WsgiRouteResolver",
    "flask_route",
    "install_flask_hook",
    "starlette_route",
]

#: The one route every unmatched request (404s, scanners) is recorded under.
UNMATCHED: Final = "<unmatched>"
#: Where templates go once a middleware has seen ``max_routes`` distinct ones.
OVERFLOW: Final = "<other>"
#: The key an app or framework may set in the ASGI scope or WSGI environ.
ROUTE_KEY: Final = "perfnb.route"

#: Given the ASGI scope after the app ran, the route template or ``None``.
AsgiRouteResolver = Callable[[MutableMapping[str, Any]], "str | None"]
#: Given the WSGI environ after the app ran, the route template or ``None``.
WsgiRouteResolver = Callable[[MutableMapping[str, Any]], "str | None"]

_MAX_CACHED_PREFIXES: Final = 256


def starlette_route(scope: MutableMapping[str, Any]) -> str | None:
    """The template of the route Starlette/FastAPI matched, without mount prefixes.

    Use :class:`StarletteRouteResolver` (the middleware's default) to include
    the prefixes of mounts.
    """
    override = scope.get(ROUTE_KEY)
    if override is not None:
        return override if isinstance(override, str) else None
    route = scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None


def _routes_of(app: object) -> Sequence[Any] | None:
    # Middleware keeps the next app as `.app` (Starlette's and most others do);
    # walk down to the first object with a route table.
    for _ in range(32):
        routes = getattr(app, "routes", None)
        if isinstance(routes, Sequence) and not isinstance(routes, str):
            return routes
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _mount_template(routes: Sequence[Any], raw: str, depth: int = 0) -> str | None:
    """The template of the chain of mounts that consumed ``raw`` (``/api/v1``)."""
    if depth > 16:
        return None
    for route in routes:
        regex = getattr(route, "path_regex", None)
        template = getattr(route, "path_format", None)
        if regex is None or not isinstance(template, str) or not template.endswith("/{path}"):
            continue  # not a Mount
        match = regex.match(raw + "/")
        if match is None:
            continue
        rest = match.groupdict().get("path", "")
        head = template.removesuffix("/{path}")
        if not rest:
            return head
        below = _routes_of(route)
        if below is None:
            continue
        tail = _mount_template(below, "/" + rest.rstrip("/"), depth + 1)
        if tail is not None:
            return head + tail
    return None


class StarletteRouteResolver:
    """Route templates for Starlette and FastAPI apps, mount prefixes included.

    ``app`` is what the middleware wraps; the route table is found by following
    ``.app`` attributes down to the router. Prefixes are resolved once each and
    cached (at most 256; beyond that they are resolved on every request).

    >>> from starlette.applications import Starlette
    >>> from starlette.routing import Mount, Route
    >>> inner = Route("/cards/{card_id}", lambda r: None)
    >>> app = Starlette(routes=[Mount("/api/{version}", routes=[inner])])
    >>> StarletteRouteResolver(app)({"route": inner, "root_path": "/api/v2",
    ...                              "app_root_path": ""})
    '/api/{version}/cards/{card_id}'
    """

    __slots__ = ("_app", "_prefixes")

    def __init__(self, app: object) -> None:
        self._app = app
        self._prefixes: dict[str, str | None] = {}

    def __call__(self, scope: MutableMapping[str, Any]) -> str | None:
        template = starlette_route(scope)
        if template is None or "app_root_path" not in scope or ROUTE_KEY in scope:
            return template
        # Only a Mount sets app_root_path; root_path then carries the raw prefix.
        prefix = str(scope.get("root_path", ""))[len(str(scope["app_root_path"])) :]
        if not prefix:
            return template
        cache = self._prefixes
        if prefix in cache:
            head = cache[prefix]
        else:
            routes = _routes_of(self._app)
            head = None if routes is None else _mount_template(routes, prefix)
            if len(cache) < _MAX_CACHED_PREFIXES:
                cache[prefix] = head
        # A prefix no mount explains would leak a raw path: call it unmatched.
        return None if head is None else head + template


def flask_route(environ: MutableMapping[str, Any]) -> str | None:
    """The URL rule Flask matched (``/cards/<int:card_id>``), left by the hook.

    Flask clears its request object from the environ when the request ends, so
    the rule is copied there while the request runs (:func:`install_flask_hook`).
    """
    override = environ.get(ROUTE_KEY)
    if override is not None:
        return override if isinstance(override, str) else None
    request = environ.get("werkzeug.request")  # other Werkzeug apps keep it there
    rule = getattr(request, "url_rule", None)
    template = getattr(rule, "rule", None)
    return template if isinstance(template, str) else None


def _copy_flask_rule() -> None:
    from flask import request  # only ever called inside a Flask request

    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule


def install_flask_hook(app: Any) -> bool:
    """Make a Flask app hand its matched URL rule to perfnb; True when installed.

    ``app`` is a Flask app or its bound ``wsgi_app``; anything else is left
    alone (False). Installing twice adds the hook once.

    >>> from flask import Flask
    >>> install_flask_hook(Flask("shop"))
    True
    """
    target = getattr(app, "__self__", app)
    register = getattr(target, "before_request", None)
    functions = getattr(target, "before_request_funcs", None)
    if register is None or not isinstance(functions, dict) or not hasattr(target, "url_map"):
        return False
    if _copy_flask_rule not in functions.get(None, []):
        register(_copy_flask_rule)
    return True


class DjangoRouteMiddleware:
    """A Django middleware that hands the matched URL pattern to perfnb.

    Add ``"perfnb.server.routes.DjangoRouteMiddleware"`` to ``MIDDLEWARE``; it
    stores ``"/" + request.resolver_match.route`` where the perfnb middleware
    finds it (the WSGI environ, or the ASGI scope).

    >>> class Request:  # what Django passes, reduced to what is read
    ...     META, scope = {}, None
    ...     resolver_match = type("Match", (), {"route": "cards/<int:pk>"})()
    >>> request = Request()
    >>> DjangoRouteMiddleware(lambda r: "response").process_view(request, None, (), {})
    >>> request.META["perfnb.route"]
    '/cards/<int:pk>'
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(
        self, request: Any, view_func: object, view_args: object, view_kwargs: object
    ) -> None:
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        if not isinstance(route, str):
            return
        template = "/" + route.lstrip("^").removesuffix("$")
        scope = getattr(request, "scope", None)
        if isinstance(scope, MutableMapping):
            scope[ROUTE_KEY] = template
        meta = getattr(request, "META", None)
        if isinstance(meta, MutableMapping):
            meta[ROUTE_KEY] = template
