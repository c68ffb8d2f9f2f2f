"""The allow-list holds for every request of a run: redirects and absolute URLs included.

A loopback app answers with redirects off the allow-list; a journey also asks for
absolute URLs elsewhere. An audit hook records every ``socket.getaddrinfo`` and
``socket.connect`` of this process: the hosts off the list must never appear, and
each refusal must be in the run's results as ``refused_host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from load_target import wait_for

from perfnb.errors import TargetError
from perfnb.load import Journey, Session, Users, run_load, run_single_user
from perfnb.load.engine import Client, Target, check_host, check_target
from perfnb.load.scenarios import AllowListTransport, make_client
from perfnb.schema import Record

OUTSIDE = ("elsewhere.invalid", "10.0.0.1")


class _NetAudit:
    """The hosts of every ``socket.getaddrinfo`` / ``socket.connect`` while recording.

    Audit hooks cannot be removed, so one is installed per process and only
    records between :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self.hosts: list[tuple[str, str]] = []
        self.recording = False
        self.installed = False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        if event == "socket.getaddrinfo":
            self.hosts.append((event, _text(args[0])))
        elif event == "socket.connect" and isinstance(args[1], tuple):
            self.hosts.append((event, _text(args[1][0])))

    def start(self) -> None:
        if not self.installed:
            sys.addaudithook(self)
            self.installed = True
        self.hosts.clear()
        self.recording = True

    def stop(self) -> set[str]:
        self.recording = False
        return {host for _, host in self.hosts}


def _text(host: object) -> str:
    # anyio hands getaddrinfo the IDNA-encoded name as bytes
    return host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)


_AUDIT = _NetAudit()


@pytest.fixture
def audit() -> Iterator[_NetAudit]:
    _AUDIT.start()
    try:
        yield _AUDIT
    finally:
        _AUDIT.stop()


async def redirecting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/out`` and ``/out-ip`` redirect off the allow-list; ``/hop*`` to loopback."""
    port = scope["server"][1]
    locations = {
        "/out": b"http://elsewhere.invalid/x",
        "/out-ip": b"http://10.0.0.1/x",
        "/hop": b"/ok",
        "/hop-abs": f"http://127.0.0.1:{port}/ok".encode(),
    }
    location = locations.get(scope["path"])
    if location is None:
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    headers = [(b"location", location), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def app_url() -> Iterator[str]:
    """:func:`redirecting_app` on a real uvicorn on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(redirecting_app, log_level="warning", loop="asyncio", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def wandering_journey(session: Session) -> None:
    """Follows loopback redirects, then tries to leave the allow-list four ways."""
    await session.get("/hop")
    await session.get("/hop-abs")
    for path, route in (
        ("/out", "/out"),
        ("/out-ip", "/out-ip"),
        ("http://elsewhere.invalid/", "/absolute-name"),
    ):
        with contextlib.suppress(TargetError):
            await session.get(path, route=route)
    await session.think(0.05)
    # not caught: the refusal ends the iteration, which the run counts as well
    await session.get("http://10.0.0.1/", route="/absolute-ip")


def _assert_never_left(seen: set[str]) -> None:
    assert "127.0.0.1" in seen  # the hook sees this path's lookups and connects at all
    assert not seen & set(OUTSIDE), seen


# -- the check itself ---------------------------------------------------------------


def test_check_target_keeps_the_hosts_listed() -> None:
    target = check_target("http://127.0.0.1:8000", allow_hosts=["Staging.Example", "[::2]"])
    assert target.allowed == ("::2", "staging.example")
    assert check_target("http://127.0.0.1:8000").allowed == ()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "app.test", "staging.example"]
)
def test_check_host_accepts_loopback_the_target_and_the_listed(host: str) -> None:
    target = check_target("http://app.test:8000", allow_hosts=["app.test", "staging.example"])
    check_host(host, target)


@pytest.mark.parametrize("host", ["elsewhere.invalid", "10.0.0.1", "localhost", "localhost.", ""])
def test_check_host_refuses_anything_else_naming_host_and_list(host: str) -> None:
    target = check_target("http://127.0.0.1:8000", allow_hosts=["staging.example"])
    with pytest.raises(TargetError, match=rf"host '{re.escape(host)}' refused.*'staging\.example'"):
        check_host(host, target)


def test_localhost_is_accepted_when_it_is_the_target() -> None:
    check_host("localhost", check_target("http://localhost:8000"))


def test_a_refused_redirect_hop_never_reaches_the_inner_transport() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://elsewhere.invalid/x"})

    target = check_target("http://127.0.0.1:8000")

    async def main() -> None:
        guard = AllowListTransport(target, httpx.MockTransport(handler))
        async with httpx.AsyncClient(
            base_url=target.url, transport=guard, follow_redirects=True
        ) as client:
            await client.get("/out")

    with pytest.raises(TargetError, match=r"'elsewhere\.invalid' refused"):
        asyncio.run(main())
    assert sent == ["http://127.0.0.1:8000/out"]


# -- end to end: real uvicorn on 127.0.0.1, nothing resolved or contacted off the list --


@pytest.mark.slow
def test_run_load_refuses_and_reports_redirects_and_absolute_urls(
    app_url: str, audit: _NetAudit
) -> None:
    records: list[Record] = []
    result = run_load(
        app_url,
        Journey(wandering_journey, timeout=2.0),
        Users(1, duration=1.0),
        workers=0,  # a thread of this process, so the audit hook sees its sockets
        use_uvloop=False,  # uvloop resolves and connects in libuv, out of the hook's sight
        probe_memory=False,
        sink=records.append,
    )
    _assert_never_left(audit.stop())
    routes = {r.route: r for r in result.routes}
    for route in ("/hop", "/hop-abs"):
        assert set(routes[route].statuses) == {200}
        assert routes[route].errors == 0
    for route in ("/out", "/out-ip", "/absolute-name", "/absolute-ip"):
        assert routes[route].count >= 1
        assert routes[route].error_types == {"refused_host": routes[route].count}
        assert set(routes[route].statuses) == {0}
    assert result.journey_errors >= 1  # the uncaught refusal ended iterations, counted
    refused = [r for r in records if r.get("error_type") == "refused_host"]
    messages = {r["route"]: r.get("error_message", "") for r in refused}
    assert "'elsewhere.invalid' refused" in messages["/out"]
    assert "'10.0.0.1' refused" in messages["/out-ip"]
    assert "'elsewhere.invalid' refused" in messages["/absolute-name"]
    assert "'10.0.0.1' refused" in messages["/absolute-ip"]


def test_run_single_user_refuses_and_reports(app_url: str, audit: _NetAudit) -> None:
    async def caught(session: Session) -> None:
        await session.get("/hop")
        for path in ("/out", "http://elsewhere.invalid/", "http://10.0.0.1/"):
            with contextlib.suppress(TargetError):
                await session.get(path, route="/r" + str(len(path)))

    rows = run_single_user(caught, app_url)
    assert [(r["status"], r["error_type"]) for r in rows] == [
        (200, ""),
        (0, "refused_host"),
        (0, "refused_host"),
        (0, "refused_host"),
    ]
    assert "'elsewhere.invalid' refused" in rows[1]["error_message"]
    assert "'elsewhere.invalid' refused" in rows[2]["error_message"]
    assert "'10.0.0.1' refused" in rows[3]["error_message"]

    with pytest.raises(TargetError, match=r"'10\.0\.0\.1' refused"):
        run_single_user(wandering_journey, app_url)
    _assert_never_left(audit.stop())


def test_a_name_listed_in_allow_hosts_is_reached(app_url: str, audit: _NetAudit) -> None:
    # localhost is a name: off the list for a 127.0.0.1 target unless listed explicitly
    port = app_url.rsplit(":", 1)[1]

    async def journey(session: Session) -> None:
        await session.get(f"http://localhost:{port}/ok", route="/ok")

    with pytest.raises(TargetError, match="'localhost' refused"):
        run_single_user(journey, app_url)
    assert "localhost" not in audit.stop()
    audit.start()
    rows = run_single_user(journey, app_url, allow_hosts=["localhost"])
    assert rows[0]["status"] == 200
    assert "localhost" in audit.stop()


def test_make_client_checks_against_the_workers_target(app_url: str, audit: _NetAudit) -> None:
    # the worker builds its journey clients from the run's Target alone
    target: Target = check_target(app_url, allow_hosts=["staging.example"])

    async def main() -> int:
        async with make_client(target, run_id="r1", timeout=2.0) as client:
            with pytest.raises(TargetError, match=r"'elsewhere\.invalid'.*'staging\.example'"):
                await client.get("/out")
            return (await client.get("/hop")).status_code

    assert asyncio.run(main()) == 200
    _assert_never_left(audit.stop())


def test_engine_client_refuses_an_absolute_url_before_sending(
    app_url: str, audit: _NetAudit
) -> None:
    # the lean client writes the path into its request line and always connects to the
    # checked target's address; an absolute URL there would reach the target as a proxy
    # request for another host, so it is refused before anything is sent
    async def main() -> None:
        async with Client(app_url, run_id="r1", timeout=2.0) as client:
            with pytest.raises(TargetError, match=r"elsewhere\.invalid"):
                await client.request("GET", "http://elsewhere.invalid/")
            assert (await client.request("GET", "/")).status == 200

    asyncio.run(main())
    _assert_never_left(audit.stop())
