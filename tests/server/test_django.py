"""A real Django project, monitored under WSGI (wsgiref) and ASGI (uvicorn).

Django is configured in-process with ``settings.configure``: one URLconf with a
plain view, a typed path converter, an included sub-URLconf, a regex route, a view
that raises and a streaming view. ``DjangoRouteMiddleware`` hands the matched
pattern to perfnb's middleware, which records it as the route template.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

django = pytest.importorskip("django")

from mw_support import raw_request, serve_asgi, serve_wsgi, server_timing, split, wait_for  # noqa: E402

from perfnb.schema import Record, validate_record  # noqa: E402
from perfnb.server import PerfnbMiddleware, PerfnbWSGIMiddleware  # noqa: E402

pytestmark = pytest.mark.slow

URLCONF = "perfnb_test_django_urls"


def _install_urlconf() -> None:
    """Build the project's URLconf as a module (Django imports URLconfs by name)."""
    from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import include, path, re_path

    def index(request: object) -> HttpResponse:
        return HttpResponse(b"home")

    def card(request: object, card_id: int) -> JsonResponse:
        return JsonResponse({"card": card_id})

    def comment(request: object, card_id: int, slug: str) -> HttpResponse:
        return HttpResponse(f"{card_id}:{slug}".encode())

    def archive(request: object, year: str) -> HttpResponse:
        return HttpResponse(year.encode())

    def boom(request: object) -> HttpResponse:
        raise RuntimeError("the view failed")

    def events(request: object) -> StreamingHttpResponse:
        return StreamingHttpResponse(iter([b"data: 1\n\n", b"data: 2\n\n"]))

    nested = types.ModuleType(URLCONF + "_cards")
    nested.urlpatterns = [  # type: ignore[attr-defined]
        path("<int:card_id>", card),
        path("<int:card_id>/comments/<slug:slug>", comment),
    ]
    sys.modules[nested.__name__] = nested
    root = types.ModuleType(URLCONF)
    root.urlpatterns = [  # type: ignore[attr-defined]
        path("", index),
        path("api/cards/", include(nested.__name__)),
        re_path(r"^archive/(?P<year>[0-9]{4})/$", archive),
        path("boom", boom),
        path("events", events),
    ]
    sys.modules[URLCONF] = root


@pytest.fixture(scope="module")
def django_app() -> Iterator[None]:
    from django.conf import settings  # a lazy object: importing it at the top trips doctest

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF=URLCONF,
            SECRET_KEY="perfnb-tests-only",
            MIDDLEWARE=["perfnb.server.routes.DjangoRouteMiddleware"],
            INSTALLED_APPS=[],
            DATABASES={},
            LOGGING_CONFIG=None,
        )
        django.setup()
    elif settings.ROOT_URLCONF != URLCONF:
        pytest.skip("Django is already configured for another project in this process")
    _install_urlconf()
    yield
    for name in (URLCONF, URLCONF + "_cards"):
        sys.modules.pop(name, None)


REQUESTS = [
    ("/", "/", 200),
    ("/api/cards/7", "/api/cards/<int:card_id>", 200),
    ("/api/cards/7/comments/first-one", "/api/cards/<int:card_id>/comments/<slug:slug>", 200),
    ("/archive/2026/", "/archive/(?P<year>[0-9]{4})/", 200),
    ("/boom", "/boom", 500),
    ("/wp-login.php", "<unmatched>", 404),
]


def _check_records(records: list[Record], service: str) -> None:
    wait_for(lambda: len([r for r in records if r["kind"] == "http"]) >= len(REQUESTS))
    by_route = {r["route"]: r for r in records if r["kind"] in ("http", "stream")}
    for record in by_route.values():
        validate_record(record)
        assert record["service"] == service
    for _, route, status in REQUESTS:
        assert by_route[route]["status"] == status, route
    assert by_route["/events"]["kind"] == "stream"


def test_django_under_wsgi(django_app: None) -> None:
    from django.core.wsgi import get_wsgi_application

    records: list[Record] = []
    plain = get_wsgi_application()
    monitored = PerfnbWSGIMiddleware(
        get_wsgi_application(), service="django-wsgi", sink=records.append
    )
    with serve_wsgi(plain) as plain_port, serve_wsgi(monitored) as perfnb_port:
        for raw_path, _, _ in REQUESTS:
            without = raw_request(plain_port, "GET", raw_path)
            with_mw = raw_request(perfnb_port, "GET", raw_path)
            assert split(with_mw) == split(without), raw_path
            assert server_timing(without) == []
            assert len(server_timing(with_mw)) == 1
        raw_request(perfnb_port, "GET", "/events")
    _check_records(records, "django-wsgi")


# Django warns that it serves a synchronous iterator from a thread under ASGI: expected here.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous")
def test_django_under_asgi(django_app: None) -> None:
    from django.core.asgi import get_asgi_application

    records: list[Record] = []
    monitored = PerfnbMiddleware(get_asgi_application(), service="django-asgi", sink=records.append)
    with serve_asgi(monitored) as port:
        for raw_path, _, status in REQUESTS:
            response = raw_request(port, "GET", raw_path)
            assert response.startswith(f"HTTP/1.1 {status}".encode()), raw_path
            assert len(server_timing(response)) == 1
        raw_request(port, "GET", "/events")
    _check_records(records, "django-asgi")
