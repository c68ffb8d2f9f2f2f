"""Who may read the feed: token rules, loopback-only without a token, bare 401s."""

from __future__ import annotations

import socket

import httpx
import pytest
from feed_support import monitored_app, serve

from perfnb.server.auth import Authoriser, is_loopback
from perfnb.server.monitor import Monitor

PREFIX = "/api/performance-metrics"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("192.168.1.5", False),
        ("localhost", False),
        ("", False),
        (None, False),
        ("not an address", False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_token_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERFNB_TOKEN", "from-env")
    auth = Authoriser(token=None)
    assert auth.requires_token
    ok = {"client": "10.0.0.1", "query_token": None, "proxied": False}
    assert auth.allows(authorization="Bearer from-env", **ok)  # type: ignore[arg-type]
    assert not auth.allows(authorization="Bearer other", **ok)  # type: ignore[arg-type]
    # An explicit argument wins over the environment.
    assert Authoriser(token="arg").allows(authorization="Bearer arg", **ok)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic czNjcmV0", "bearer wrong", "Bearer s3cre", "s3cret"],
)
def test_missing_or_wrong_credentials_are_refused(authorization: str | None) -> None:
    auth = Authoriser(token="s3cret")
    assert not auth.allows(
        client="127.0.0.1", authorization=authorization, query_token=None, proxied=False
    )


def test_scheme_is_case_insensitive_and_query_token_works() -> None:
    auth = Authoriser(token="s3cret")
    kw = {"client": "10.0.0.1", "proxied": True}
    assert auth.allows(authorization="bearer s3cret", query_token=None, **kw)  # type: ignore[arg-type]
    assert auth.allows(authorization=None, query_token="s3cret", **kw)  # type: ignore[arg-type]
    assert not auth.allows(authorization=None, query_token="s3cre\udcff", **kw)  # type: ignore[arg-type]


async def _get(monitor: Monitor, path: str, client: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=monitored_app(monitor), client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.get(path, headers=headers)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [PREFIX, f"{PREFIX}/control", f"{PREFIX}/nope"])
async def test_without_a_token_other_hosts_get_a_bare_401(path: str) -> None:
    monitor = Monitor(environ={})
    response = await _get(monitor, path, "10.1.2.3")
    assert response.status_code == 401
    assert response.content == b""
    assert monitor.counters["unauthorised"] == 1
    assert (await _get(monitor, PREFIX, "127.0.0.1")).status_code == 200


@pytest.mark.anyio
async def test_with_a_token_other_hosts_are_served() -> None:
    monitor = Monitor(token="s3cret")
    response = await _get(monitor, PREFIX, "10.1.2.3", authorization="Bearer s3cret")
    assert response.status_code == 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.slow
def test_token_rules_over_http() -> None:
    monitor = Monitor(token="s3cret")
    with serve(monitored_app(monitor)) as url:
        missing = httpx.get(f"{url}{PREFIX}")
        wrong = httpx.get(f"{url}{PREFIX}", headers={"Authorization": "Bearer nope"})
        wrong_query = httpx.get(f"{url}{PREFIX}/control", params={"token": "nope"})
        for refused in (missing, wrong, wrong_query):
            assert refused.status_code == 401
            assert refused.content == b""
        # The refusals are indistinguishable apart from the date.
        strip = {"date"}
        assert {k: v for k, v in missing.headers.items() if k not in strip} == {
            k: v for k, v in wrong.headers.items() if k not in strip
        }
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}{PREFIX}", headers=good).status_code == 200
        assert httpx.post(f"{url}{PREFIX}/control", headers=good, json={}).status_code == 200
        with httpx.stream("GET", f"{url}{PREFIX}/stream", params={"token": "s3cret"}) as r:
            assert r.status_code == 200
        # The beacon takes input from real users' browsers: no token needed.
        batch = {"v": 1, "page": "/", "records": []}
        assert httpx.post(f"{url}{PREFIX}/beacon", json=batch).status_code == 204
        assert monitor.counters["unauthorised"] == 3


@pytest.mark.slow
def test_no_token_serves_loopback_but_not_proxied_requests() -> None:
    monitor = Monitor(environ={})
    with serve(monitored_app(monitor)) as url:
        assert httpx.get(f"{url}{PREFIX}").status_code == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            response = httpx.get(f"{url}{PREFIX}", headers={header: "203.0.113.9"})
            assert response.status_code == 401, header
            assert response.content == b""


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_no_token_serves_ipv6_loopback() -> None:
    monitor = Monitor(environ={})
    with serve(monitored_app(monitor), host="::1") as url:
        assert httpx.get(f"{url}{PREFIX}").status_code == 200
