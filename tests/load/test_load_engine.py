from __future__ import annotations

import asyncio
import socket

import pytest
from load_target import TargetApp

from perfnb.errors import TargetError
from perfnb.load import Client, ConstantRate, Endpoint, Endpoints, LoadRun, check_target
from perfnb.load.engine import build_request


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.0.0.1:8000",
        "http://0.0.0.0:8000",
        "http://192.168.1.10",
        "http://[2001:db8::1]:80",
        "http://localhost.example.com",
    ],
)
def test_non_loopback_targets_are_refused_without_any_connection(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kw: object) -> None:
        raise AssertionError(f"network touched for a refused target: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    with pytest.raises(TargetError, match="not loopback"):
        check_target(url)
    scenario = Endpoints([Endpoint("GET", "/")])
    with pytest.raises(TargetError, match="allow_hosts"):
        LoadRun(url, scenario, ConstantRate(10, duration=1))


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1"),
        ("http://127.5.6.7:8000/base/", "127.5.6.7"),
        ("http://[::1]:8000", "::1"),
    ],
)
def test_loopback_targets_are_accepted(url: str, address: str) -> None:
    target = check_target(url)
    assert target.address == address
    assert target.port == 8000


def test_localhost_is_resolved_and_checked() -> None:
    assert check_target("http://localhost:1").address in ("127.0.0.1", "::1")


def test_a_listed_host_is_allowed_and_other_schemes_refused() -> None:
    assert check_target("http://example.com", allow_hosts=["EXAMPLE.com"]).host == "example.com"
    with pytest.raises(TargetError, match="scheme 'ftp'"):
        check_target("ftp://127.0.0.1/")
    with pytest.raises(TargetError, match="no host"):
        check_target("http:///x")


def test_request_bytes_carry_the_run_id_and_refuse_header_injection() -> None:
    target = check_target("http://127.0.0.1:9000/base")
    raw = build_request("post", "/x", target=target, run_id="run-7", body=b"{}")
    assert raw.startswith(b"POST /base/x HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n")
    assert b"\r\nX-Perfnb-Run: run-7\r\n" in raw
    assert raw.endswith(b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(TargetError, match="line breaks"):
        build_request("GET", "/", target=target, run_id="r", headers={"X": "a\r\nEvil: 1"})


@pytest.mark.slow
def test_client_against_a_real_server(target: TargetApp) -> None:
    async def main() -> None:
        async with Client(target.url, run_id="run-c", timeout=2.0) as client:
            plain = await client.request("GET", "/plain")
            assert plain.status == 200
            assert plain.json() == {"ok": True}
            assert plain.header("Server-Timing") == "app;dur=1.5, db;dur=0.5"
            assert 0 < plain.ttfb_ms <= plain.duration_ms
            chunked = await client.request("GET", "/chunked")
            assert (chunked.status, chunked.body) == (200, b"one-two-three")
            echo = await client.request("POST", "/echo", body=b"x" * 100_000)
            assert (echo.status, len(echo.body)) == (201, 100_000)
            for _ in range(20):
                assert (await client.request("GET", "/again")).status == 200
            slow = await client.request("GET", "/slow?delay_ms=5000")
            assert (slow.status, slow.error) == (0, "timeout")
            after = await client.request("GET", "/after")
            assert after.status == 200

    asyncio.run(main())
    assert {run for _, _, run in target.log} == {"run-c"}
    # keep-alive: one connection for everything before the timeout, one after
    assert len(target.clients) == 2


@pytest.mark.slow
def test_head_responses_end_at_their_headers_on_a_kept_alive_connection(
    target: TargetApp,
) -> None:
    async def main() -> None:
        async with Client(target.url, run_id="run-h", timeout=2.0) as client:
            for _ in range(3):
                head = await client.request("HEAD", "/plain")
                assert (head.status, head.body, head.error) == (200, b"", "")
                # the headers announce a body that never comes: a parser unaware of
                # HEAD would wait for it and time out
                assert head.header("Content-Length") or head.header("Transfer-Encoding")
                assert head.header("Server-Timing") == "app;dur=1.5, db;dur=0.5"
                after = await client.request("GET", "/plain")
                assert (after.status, after.json()) == (200, {"ok": True})

    target.clients.clear()
    asyncio.run(main())
    assert len(target.clients) == 1  # HEAD did not cost the connection


@pytest.mark.slow
def test_connection_refused_is_a_result_not_an_exception() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused

        async def main() -> None:
            async with Client(f"http://127.0.0.1:{port}", run_id="r") as client:
                response = await client.request("GET", "/")
                assert (response.status, response.error) == (0, "connect")

        asyncio.run(main())
