"""The lean HTTP/1.1 keep-alive client that load runs send their requests with.

One :class:`Connection` is an :class:`asyncio.Protocol` over one TCP connection,
parsing responses with ``httptools`` (the parser uvicorn uses). It is driven by
callbacks rather than coroutines — a request is one ``transport.write`` of bytes
built once in advance, and the response's end calls the driver back — because a
future and a task per request would cost more than the rest of the request. The
awaitable :class:`Client` on top is for scenarios and one-off calls.

Every target is checked against the allow-list first (:func:`check_target`):
loopback only unless the user names a host explicitly. Every request carries
``X-Perfnb-Run: <run id>`` so the app can keep load traffic apart.

>>> check_target("http://127.0.0.1:8000/api").port
8000
>>> check_target("http://example.com/")
Traceback (most recent call last):
...
perfnb.errors.TargetError: target host 'example.com' is not loopback ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httptools

from perfnb.errors import TargetError

__all__ = [
    "RUN_HEADER",
    "Client",
    "Connection",
    "Response",
    "Target",
    "build_request",
    "check_host",
    "check_target",
    "open_connection",
]

#: The header that tags every load request with its run id.
RUN_HEADER: Final = "X-Perfnb-Run"
_USER_AGENT: Final = "perfnb-load/1"
_perf_ns: Final = time.perf_counter_ns
#: Methods whose request may be sent twice without changing what it does (RFC 9110 9.2.2).
_IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


@dataclass(frozen=True, slots=True)
class Target:
    """A checked load target: where to connect and what to send as ``Host``."""

    scheme: str
    host: str  # the host as the user wrote it (``Host`` header)
    address: str  # the address connected to (a resolved loopback IP for ``localhost``)
    port: int
    base_path: str  # path prefix from the URL, without a trailing slash
    allowed: tuple[str, ...] = ()  # the hosts listed in allow_hosts, so later requests are checked

    @property
    def host_header(self) -> str:
        """The ``Host`` header value."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, normalised."""
        return f"{self.scheme}://{self.host_header}{self.base_path}"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_target(
    url: str, *, allow_hosts: Iterable[str] = (), allow_option: str = "allow_hosts"
) -> Target:
    """Parse ``url`` and refuse it unless its host is loopback or listed in ``allow_hosts``.

    Loopback means an address in 127.0.0.0/8, ``::1``, or ``localhost`` (which is
    resolved here and must resolve to loopback only). Other names are refused
    without any lookup or connection unless listed. Raises
    :class:`~perfnb.errors.TargetError` naming the host and what is accepted; a
    refusal names ``allow_option`` as the way to list a host (a command line
    passes its flag, ``"--allow-host"``). A URL that cannot be parsed, a port
    outside 1-65535 (``:0`` included), a query, fragment or user name (load
    requests would drop them) and a path with spaces or non-ASCII characters
    (percent-encode them) are refused too.

    >>> check_target("http://localhost:9000").address in ("127.0.0.1", "::1")
    True
    >>> check_target("http://127.0.0.1:0")
    Traceback (most recent call last):
    ...
    perfnb.errors.TargetError: target 'http://127.0.0.1:0': port 0 is out of range; ...
    """
    given: object = url  # typed str, but CLI and notebook input may be anything
    if not isinstance(given, str):
        msg = f"target: got {given!r}; expected a URL such as http://127.0.0.1:8000"
        raise TargetError(msg)
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:  # an unclosed '[' or an IPv4 address in brackets
        msg = f"target {url!r} is not a URL ({exc}); expected a URL such as http://127.0.0.1:8000"
        raise TargetError(msg) from None
    if parts.scheme not in ("http", "https"):
        msg = f"target {url!r}: scheme {parts.scheme!r} is not supported; accepted: http, https"
        raise TargetError(msg)
    host = (parts.hostname or "").lower()
    if not host:
        msg = f"target {url!r} has no host; expected a URL such as http://127.0.0.1:8000"
        raise TargetError(msg)
    try:
        given_port = parts.port
    except ValueError:
        msg = f"target {url!r}: the port is not a number in 1-65535"
        raise TargetError(msg) from None
    if given_port is not None and not 1 <= given_port <= 65535:
        msg = f"target {url!r}: port {given_port} is out of range; accepted: 1-65535"
        raise TargetError(msg)
    port = given_port or (443 if parts.scheme == "https" else 80)
    if parts.query or parts.fragment or "@" in parts.netloc:
        msg = (
            f"target {url!r}: a query, fragment or user name would not be sent with the "
            "requests; accepted: a base URL such as http://127.0.0.1:8000/prefix"
        )
        raise TargetError(msg)
    odd = next((c for c in parts.path if not "!" <= c <= "~"), None)
    if odd is not None:
        # the path goes into every request line as it is: a space would split it
        msg = (
            f"target {url!r}: the path holds {odd!r}; accepted: visible ASCII characters "
            "(percent-encode the others)"
        )
        raise TargetError(msg)
    allowed = {h.lower().strip("[]") for h in allow_hosts}
    listed = tuple(sorted(allowed))
    base_path = parts.path.rstrip("/")
    if host in allowed:
        return Target(parts.scheme, host, host, port, base_path, listed)
    if _is_loopback(host):
        return Target(parts.scheme, host, host, port, base_path, listed)
    if host == "localhost":
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            msg = f"target host 'localhost' does not resolve ({exc})"
            raise TargetError(msg) from None
        addresses = [str(info[4][0]) for info in infos]
        bad = [a for a in addresses if not _is_loopback(a)]
        if bad or not addresses:
            msg = (
                f"target host 'localhost' resolves to non-loopback {bad}; load only goes "
                f"to 127.0.0.0/8 or ::1 unless a host is listed with {allow_option}"
            )
            raise TargetError(msg)
        return Target(parts.scheme, host, addresses[0], port, base_path, listed)
    msg = (
        f"target host {host!r} is not loopback (127.0.0.0/8, ::1, localhost); load only "
        f"goes to other hosts listed explicitly with {allow_option} (now {sorted(allowed)})"
    )
    raise TargetError(msg)


def check_host(host: str, target: Target) -> None:
    """Refuse ``host`` unless a run against ``target`` may send to it; no lookup is made.

    Accepted: a loopback address literal, the target's own host (checked by
    :func:`check_target`), or a host listed in ``allow_hosts``. Any other name —
    ``localhost`` included when the target is not ``localhost`` — is refused with
    :class:`~perfnb.errors.TargetError` naming the host and what is accepted, so a
    redirect or an absolute URL cannot take a run anywhere else.

    >>> check_host("127.0.0.2", check_target("http://127.0.0.1:8000"))
    >>> check_host("elsewhere.invalid", check_target("http://127.0.0.1:8000"))
    Traceback (most recent call last):
    ...
    perfnb.errors.TargetError: host 'elsewhere.invalid' refused: ...
    """
    name = host.lower().strip("[]")
    if name and (name == target.host or name in target.allowed or _is_loopback(name)):
        return
    msg = (
        f"host {name!r} refused: a run against {target.host!r} only sends to loopback "
        f"addresses (127.0.0.0/8, ::1), its target's host and hosts listed in allow_hosts "
        f"(now {list(target.allowed)})"
    )
    raise TargetError(msg)


def build_request(
    method: str,
    path: str,
    *,
    target: Target,
    run_id: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """The bytes of one HTTP/1.1 request, built once and sent many times.

    >>> t = check_target("http://127.0.0.1:8000")
    >>> build_request("GET", "/x", target=t, run_id="r1").split(b"\\r\\n")[:2]
    [b'GET /x HTTP/1.1', b'Host: 127.0.0.1:8000']
    """
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        # an absolute URL here would reach the target as a proxy request for another host
        msg = (
            f"request path {path!r}: accepted: a path on the target starting with '/' "
            "(no scheme, host, spaces or line breaks)"
        )
        raise TargetError(msg)
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for name, value in pairs:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            msg = f"header {name!r}: line breaks are refused in header names and values"
            raise TargetError(msg)
    lower = {n.lower() for n, _ in pairs}
    lines = [f"{method.upper()} {target.base_path}{path} HTTP/1.1", f"Host: {target.host_header}"]
    lines.append(f"{RUN_HEADER}: {run_id}")
    if "user-agent" not in lower:
        lines.append(f"User-Agent: {_USER_AGENT}")
    lines.extend(f"{n}: {v}" for n, v in pairs)
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


#: Called when a response ends or the request fails: ``done(connection)``; the outcome
#: is on the connection (``status``, ``error``, times in perf_counter ns).
DoneCallback = Callable[["Connection"], None]


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, driven by callbacks.

    After ``send(raw, tag)``, exactly one call of ``on_done(self)`` follows: at the
    response's last byte, or on error (``error`` set: ``"closed"``, ``"protocol"``,
    ``"timeout"``, ``"reset"``). Times are ``perf_counter_ns``: ``start_ns`` at the
    write, ``ttfb_ns`` at the first response bytes, ``end_ns`` at the last.
    """

    def __init__(self, on_done: DoneCallback, *, keep_body: bool = False) -> None:
        self.on_done = on_done
        self.keep_body = keep_body
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False
        self.tag: Any = None
        self.start_ns = 0
        self.ttfb_ns = 0
        self.end_ns = 0
        self.status = 0
        self.response_bytes = 0
        self.error = ""
        self.error_message = ""
        self.server_timing = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self._keep_alive = True
        self._head = False  # the parser in use is a HEAD request's (see _HeadParser)
        self.raw = b""  # the request in flight (or the last one), as sent
        self.served = 0  # responses completed on this connection
        self.answered = False  # whether any byte of the response in flight arrived

    # -- the driver's side --------------------------------------------------------
    def send(self, raw: bytes, tag: Any = None) -> None:
        """Write one request; ``on_done`` is called once when it ends."""
        self.tag = tag
        self.raw = raw
        self.answered = False
        self.status = 0
        self.response_bytes = 0
        self.ttfb_ns = 0
        self.error = ""
        self.server_timing = ""
        if self.keep_body:
            self.headers = []
            self.body = []
        self.busy = True
        # A response to HEAD has no body whatever its Content-Length says, and the
        # parser cannot know the request's method: HEAD requests get a parser that
        # ends the response at its headers.
        if raw[:5] == b"HEAD ":
            self.parser = httptools.HttpResponseParser(_HeadParser(self))
            self._head = True
        elif self._head:
            self.parser = httptools.HttpResponseParser(self)
            self._head = False
        self.start_ns = _perf_ns()
        if self.closed or self.transport is None:
            self._finish("closed", "connection is closed")
            return
        self.transport.write(raw)

    def fail(self, error: str, message: str = "") -> None:
        """End the request in flight with ``error`` and close the connection."""
        if self.busy:
            self._finish(error, message)
        self.close()

    def close(self) -> None:
        """Close the connection (a request in flight is not reported)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # requests are single writes; never let Nagle hold one back
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def retryable(self) -> bool:
        """Whether the request that just failed may be sent again on a fresh connection.

        A keep-alive connection the server closed while idle fails the next request
        before the server read it (the close and the write crossed). Like browsers and
        mature HTTP clients, such a request is sent once more on a new connection when
        its method is idempotent, it was on a reused connection and no byte of a reply
        arrived; it counts as a reconnect, not an error.
        """
        return (
            self.error in ("closed", "reset")
            and self.served > 0
            and not self.answered
            and self.raw.split(b" ", 1)[0] in _IDEMPOTENT
        )

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if not self.ttfb_ns:
            self.ttfb_ns = _perf_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail("protocol", str(exc)[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:
            if exc is None:
                self._finish("closed", "server closed the connection")
            else:
                self._finish("reset", f"{type(exc).__name__}: {exc}"[:200])

    # -- httptools callbacks ------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.keep_body:
            self.headers.append((name, value))
        if len(name) == 13 and name.lower() == b"server-timing":
            text = value.decode("latin-1")
            self.server_timing = f"{self.server_timing}, {text}" if self.server_timing else text

    def on_body(self, body: bytes) -> None:
        self.response_bytes += len(body)
        if self.keep_body:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()
        self.served += 1
        self._finish("", "")
        if not self._keep_alive:
            self.close()

    def _finish(self, error: str, message: str) -> None:
        self.end_ns = _perf_ns()
        if not self.ttfb_ns:
            self.ttfb_ns = self.end_ns
        self.error = error
        self.error_message = message
        self.busy = False
        self.on_done(self)


class _HeadParser:
    """The parser callbacks for a HEAD request: the response ends with its headers."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def on_header(self, name: bytes, value: bytes) -> None:
        self.conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        conn = self.conn
        conn.status = conn.parser.get_status_code()
        conn._keep_alive = conn.parser.should_keep_alive()
        conn.served += 1
        # the next response starts afresh: this parser still waits for a body
        conn.parser = httptools.HttpResponseParser(self)
        conn._finish("", "")
        if not conn._keep_alive:
            conn.close()


async def open_connection(
    target: Target, on_done: DoneCallback, *, keep_body: bool = False, timeout: float = 10.0
) -> Connection:
    """Open one connection to a checked target. Raises ``OSError`` or ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    ssl_context: Any = None
    if target.scheme == "https":
        import ssl  # only HTTPS targets pay for the ssl module

        ssl_context = ssl.create_default_context()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: Connection(on_done, keep_body=keep_body),
            target.address,
            target.port,
            ssl=ssl_context,
            server_hostname=target.host if ssl_context else None,
        )
    return protocol


@dataclass(frozen=True, slots=True)
class Response:
    """A response seen by :class:`Client`; times in ms."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    duration_ms: float
    ttfb_ms: float
    error: str = ""
    error_message: str = ""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.body)


class Client:
    """An awaitable keep-alive client over :class:`Connection`, for scenarios and checks.

    Connection errors and timeouts come back as a :class:`Response` with
    ``status=0`` and ``error`` set, never as exceptions, so a load run counts them.

    >>> async def demo() -> int:                      # doctest: +SKIP
    ...     async with Client("http://127.0.0.1:8000", run_id="r1") as client:
    ...         return (await client.request("GET", "/api/health")).status
    """

    def __init__(
        self,
        target: str | Target,
        *,
        run_id: str,
        allow_hosts: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.target = (
            target if isinstance(target, Target) else check_target(target, allow_hosts=allow_hosts)
        )
        self.run_id = run_id
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self.reconnects = 0  # requests sent again after a stale keep-alive connection

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    async def _attempt(
        self, raw: bytes, started: int, *, fresh: bool = False
    ) -> Connection | Response:
        """Send ``raw`` once: the connection it ended on, or the failure to connect."""
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

        def done(conn: Connection) -> None:
            fut = conn.tag
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_result(conn)

        conn = None
        while self._idle and not fresh:
            candidate = self._idle.pop()
            if not candidate.closed:
                conn = candidate
                conn.on_done = done
                break
            self._all.discard(candidate)
        if conn is None:
            try:
                conn = await open_connection(
                    self.target, done, keep_body=True, timeout=self.timeout
                )
            except (OSError, TimeoutError) as exc:
                elapsed = (_perf_ns() - started) / 1e6
                error = "timeout" if isinstance(exc, TimeoutError) else "connect"
                return Response(0, [], b"", elapsed, elapsed, error, str(exc)[:200])
            self._all.add(conn)
        conn.send(raw, waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            conn.fail("timeout", f"no complete response within {self.timeout} s")
            self._all.discard(conn)
        if conn.error:
            self._all.discard(conn)
        elif not conn.closed:
            self._idle.append(conn)
        return conn

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request and wait for its whole response."""
        raw = build_request(
            method,
            path,
            target=self.target,
            run_id=self.run_id,
            headers={**self.headers, **(headers or {})},
            body=body,
        )
        started = _perf_ns()
        conn: Connection | Response = await self._attempt(raw, started)
        if isinstance(conn, Connection) and conn.retryable:
            # the server had closed this idle keep-alive connection: once more, afresh
            self.reconnects += 1
            conn = await self._attempt(raw, started, fresh=True)
        if isinstance(conn, Response):
            return conn
        return Response(
            status=conn.status,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in conn.headers],
            body=b"".join(conn.body),
            duration_ms=(conn.end_ns - conn.start_ns) / 1e6,
            ttfb_ms=(conn.ttfb_ns - conn.start_ns) / 1e6,
            error=conn.error,
            error_message=conn.error_message,
        )
