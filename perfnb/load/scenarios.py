"""What simulated users do: endpoint lists (API stress) and journeys (async Python).

An :class:`Endpoints` scenario cycles through a list of requests on the lean
engine — the fast path, built from a list or from the app's OpenAPI document
(:func:`endpoints_from_openapi`). A :class:`Journey` is an async function over a
:class:`Session` (cookies, auth, think time) run again and again by each user;
journeys are slow by nature, so the session is an ``httpx.AsyncClient``. Every
request that client makes — each redirect hop, each absolute URL — is checked
against the run's allow-list before anything is resolved or sent
(:func:`~perfnb.load.engine.check_host`); a refused one is counted as
``refused_host``.

>>> scenario = Endpoints([Endpoint("GET", "/api/health"), Endpoint("GET", "/api/cards")])
>>> [e.route for e in scenario.endpoints]
['/api/health', '/api/cards']
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from perfnb.errors import ConfigError, TargetError
from perfnb.load.engine import RUN_HEADER, Target, check_host, check_target

__all__ = [
    "AllowListTransport",
    "Endpoint",
    "Endpoints",
    "Journey",
    "Recorder",
    "Session",
    "endpoints_from_openapi",
    "normalise_route",
    "run_single_user",
]

_ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36}|[A-Za-z0-9_-]{20,})$",
)


def normalise_route(path: str) -> str:
    """A route template for a raw path: id-like segments become ``{id}``.

    >>> normalise_route("/api/cards/42?x=1")
    '/api/cards/{id}'
    """
    path = path.split("?", 1)[0]
    parts = ["{id}" if _ID_SEGMENT.match(p) else p for p in path.split("/")]
    return "/".join(parts) or "/"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One request of an endpoint-list scenario.

    ``route`` is the template the request is counted under (defaults to
    :func:`normalise_route` of ``path``); ``weight`` how often it comes up in the
    cycle relative to the others.
    """

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    route: str = ""
    weight: int = 1

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            msg = f"endpoint path {self.path!r} must start with '/'"
            raise ConfigError(msg)
        if self.weight < 1:
            msg = f"endpoint weight {self.weight!r} for {self.path!r}: accepted: an integer ≥ 1"
            raise ConfigError(msg)
        if not self.route:
            object.__setattr__(self, "route", normalise_route(self.path))
        object.__setattr__(self, "method", self.method.upper())


@dataclass(frozen=True, slots=True)
class Endpoints:
    """An endpoint-list scenario: each user cycles through the (weighted) endpoints.

    ``think_time`` is the pause in seconds between one user's requests (closed
    model only). ``headers`` go on every request (e.g. an auth cookie).
    """

    endpoints: Sequence[Endpoint]
    think_time: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.endpoints:
            msg = "Endpoints scenario: the endpoint list is empty; give at least one Endpoint"
            raise ConfigError(msg)
        object.__setattr__(self, "endpoints", tuple(self.endpoints))

    def cycle(self) -> list[Endpoint]:
        """The endpoints in the order one user visits them, each as often as its weight."""
        out: list[Endpoint] = []
        top = max(e.weight for e in self.endpoints)
        for round_ in range(top):
            out.extend(e for e in self.endpoints if e.weight > round_)
        return out


def endpoints_from_openapi(
    document: Mapping[str, Any],
    *,
    params: Mapping[str, str] | None = None,
    methods: Iterable[str] = ("GET",),
    skip: Iterable[str] = (),
) -> list[Endpoint]:
    """Endpoints for every operation in an OpenAPI document, so every route is covered.

    Path parameters are filled from ``params`` (``{"card_id": "1"}``); operations
    whose parameters are not given, whose method is not in ``methods``, or whose
    path starts with one of ``skip`` are left out. Request bodies of POST/PUT use
    the schema's ``example`` when there is one.

    >>> doc = {"paths": {"/api/cards/{card_id}": {"get": {}}, "/api/health": {"get": {}}}}
    >>> [e.path for e in endpoints_from_openapi(doc, params={"card_id": "7"})]
    ['/api/cards/7', '/api/health']
    """
    paths = document.get("paths")
    if not isinstance(paths, Mapping):
        msg = "OpenAPI document: 'paths' is missing or not an object"
        raise ConfigError(msg)
    values = dict(params or {})
    wanted = {m.upper() for m in methods}
    skipped = tuple(skip)
    out: list[Endpoint] = []
    for template, operations in paths.items():
        if not isinstance(template, str) or not isinstance(operations, Mapping):
            continue
        if skipped and template.startswith(skipped):
            continue
        names = re.findall(r"{([^}]+)}", template)
        if any(n not in values for n in names):
            continue
        path = template
        for n in names:
            path = path.replace("{" + n + "}", values[n])
        for method, op in operations.items():
            if method.upper() not in wanted:
                continue
            body = b""
            headers: tuple[tuple[str, str], ...] = ()
            if method.upper() in ("POST", "PUT", "PATCH"):
                example = _example_body(op)
                body = json.dumps(example).encode()
                headers = (("Content-Type", "application/json"),)
            out.append(Endpoint(method.upper(), path, body=body, headers=headers, route=template))
    return out


def _example_body(op: object) -> object:
    if not isinstance(op, Mapping):
        return {}
    content = op.get("requestBody", {}).get("content", {})
    media = content.get("application/json", {}) if isinstance(content, Mapping) else {}
    if isinstance(media, Mapping):
        if "example" in media:
            return media["example"]
        schema = media.get("schema", {})
        if isinstance(schema, Mapping) and "example" in schema:
            return schema["example"]
    return {}


#: Where a journey's requests are counted: ``recorder(epoch_us, route, method, status,
#: duration_us, ttfb_us, response_bytes, error, error_message, -1, server_timing)``.
Recorder = Callable[[int, str, str, int, int, int, int, str, str, int, str], None]


class Session:
    """One simulated user's HTTP session: cookies, default headers and think time.

    Methods mirror httpx (``get``, ``post``, ``request``) and take ``route=`` to
    name the route template the request is counted under. Transport errors, and
    requests to a host outside the run's allow-list (error ``refused_host``, raised
    as :class:`~perfnb.errors.TargetError`), are counted and then raised, which
    ends the journey's current iteration.

    >>> async def journey(session: Session) -> None:     # doctest: +SKIP
    ...     await session.post("/api/guests", json={"name": "load"})
    ...     await session.get("/api/cards")
    ...     await session.think(1.0)
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        recorder: Recorder,
        think_time: float = 0.0,
        user: int = 0,
        inflight: dict[object, int] | None = None,
    ) -> None:
        self.client = client
        self.recorder = recorder
        # requests waiting for their response, by a token of each: when each started
        # (perf_counter ns); the worker reads their ages for the latency limit
        self.inflight: dict[object, int] = {} if inflight is None else inflight
        self.think_time = think_time
        self.user = user
        self.data: dict[str, Any] = {}  # per-user state a journey keeps between steps
        # a simulated slow network: added round-trip latency and a bandwidth cap,
        # both counted in the recorded duration (it is what the user waits)
        self.latency_s = 0.0
        self.bytes_per_s = 0.0

    async def think(self, seconds: float | None = None) -> None:
        """Pause like a user reading the page (``seconds`` or the scenario's think time)."""
        await asyncio.sleep(self.think_time if seconds is None else seconds)

    async def request(
        self, method: str, path: str, *, route: str = "", **kw: Any
    ) -> httpx.Response:
        """Send one request (httpx keywords: ``json``, ``content``, ``headers``, ``params``)."""
        route = route or normalise_route(path)
        epoch = time.time_ns() // 1000
        start = time.perf_counter_ns()
        token = object()
        self.inflight[token] = start
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            response = await self.client.request(method, path, **kw)
            if self.bytes_per_s:
                await asyncio.sleep(len(response.content) / self.bytes_per_s)
        except httpx.TransportError as exc:
            spent = (time.perf_counter_ns() - start) // 1000
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
            self.recorder(epoch, route, method, 0, spent, spent, 0, kind, str(exc)[:200], -1, "")
            raise
        except TargetError as exc:
            spent = (time.perf_counter_ns() - start) // 1000
            error = "refused_host"
            self.recorder(epoch, route, method, 0, spent, spent, 0, error, str(exc)[:200], -1, "")
            raise
        finally:
            self.inflight.pop(token, None)
        spent = (time.perf_counter_ns() - start) // 1000
        elapsed = response.elapsed.total_seconds() if response.is_closed else 0.0
        ttfb = min(spent, int(elapsed * 1e6)) if elapsed else spent
        self.recorder(
            epoch,
            route,
            method,
            response.status_code,
            spent,
            ttfb,
            len(response.content),
            "",
            "",
            -1,
            response.headers.get("server-timing", ""),
        )
        return response

    async def get(self, path: str, *, route: str = "", **kw: Any) -> httpx.Response:
        """``GET path``."""
        return await self.request("GET", path, route=route, **kw)

    async def post(self, path: str, *, route: str = "", **kw: Any) -> httpx.Response:
        """``POST path``."""
        return await self.request("POST", path, route=route, **kw)

    async def put(self, path: str, *, route: str = "", **kw: Any) -> httpx.Response:
        """``PUT path``."""
        return await self.request("PUT", path, route=route, **kw)

    async def delete(self, path: str, *, route: str = "", **kw: Any) -> httpx.Response:
        """``DELETE path``."""
        return await self.request("DELETE", path, route=route, **kw)


JourneyFunc = Callable[[Session], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Journey:
    """A journey scenario: each user runs ``func(session)`` again and again.

    ``func`` must be importable (a module-level function) to run in worker
    processes; a journey defined in a notebook runs in a thread of the kernel's
    process instead (``workers=0``), which is fine at journey rates.
    """

    func: JourneyFunc
    think_time: float = 0.0
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


class AllowListTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends only to hosts a run against ``target`` may reach.

    httpx calls its transport once per request and once per redirect hop, so the
    check here covers both; a refused request raises
    :class:`~perfnb.errors.TargetError` before ``inner`` sees it, so the host is
    never resolved nor contacted.

    >>> import asyncio
    >>> ok = httpx.MockTransport(lambda request: httpx.Response(200))
    >>> guard = AllowListTransport(check_target("http://127.0.0.1:8000"), ok)
    >>> asyncio.run(guard.handle_async_request(httpx.Request("GET", "http://127.0.0.1:8000/")))
    <Response [200 OK]>
    >>> asyncio.run(guard.handle_async_request(httpx.Request("GET", "http://elsewhere.invalid/")))
    Traceback (most recent call last):
    ...
    perfnb.errors.TargetError: host 'elsewhere.invalid' refused: ...
    """

    def __init__(self, target: Target, inner: httpx.AsyncBaseTransport) -> None:
        self.target = target
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_host(request.url.host, self.target)
        return await self.inner.handle_async_request(request)

    async def __aenter__(self) -> AllowListTransport:
        await self.inner.__aenter__()
        return self

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_client(
    target: Target,
    *,
    run_id: str,
    timeout: float,
    headers: Iterable[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The httpx client a journey's session sends with.

    The run header is set, environment proxies are ignored, and every request and
    redirect hop is held to the run's allow-list (:class:`AllowListTransport`).
    A worker passes one ``ssl_context`` to all its clients: building one loads the
    CA certificates (milliseconds), which at hundreds of journeys a second would
    take the worker's whole loop.
    """
    # the transport an AsyncClient would build itself, with trust_env=False
    verify: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
    inner = httpx.AsyncHTTPTransport(trust_env=False, verify=verify)
    return httpx.AsyncClient(
        base_url=target.url,
        headers={RUN_HEADER: run_id, **dict(headers)},
        timeout=timeout,
        trust_env=False,
        follow_redirects=True,
        transport=AllowListTransport(target, inner),
    )


def run_single_user(
    journey: Journey | JourneyFunc,
    target: str,
    *,
    run_id: str = "single-user",
    iterations: int = 1,
    allow_hosts: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Run one user's journey ``iterations`` times in this thread and return its requests.

    For debugging a journey: exceptions propagate with their traceback — a request
    to a host outside the allow-list raises :class:`~perfnb.errors.TargetError`.

    >>> rows = run_single_user(my_journey, "http://127.0.0.1:8000")   # doctest: +SKIP
    >>> rows[0]["route"], rows[0]["status"]                          # doctest: +SKIP
    ('/api/guests', 201)
    """
    scenario = journey if isinstance(journey, Journey) else Journey(journey)
    checked = check_target(target, allow_hosts=allow_hosts)
    rows: list[dict[str, Any]] = []

    def record(*row: Any) -> None:
        rows.append(
            {
                "epoch_us": row[0],
                "route": row[1],
                "method": row[2],
                "status": row[3],
                "duration_ms": row[4] / 1000.0,
                "ttfb_ms": row[5] / 1000.0,
                "response_bytes": row[6],
                "error_type": row[7],
                "error_message": row[8],
                "server_timing": row[10],
            }
        )

    async def main() -> None:
        client = make_client(
            checked, run_id=run_id, timeout=scenario.timeout, headers=scenario.headers
        )
        async with client:
            session = Session(client, recorder=record, think_time=scenario.think_time)
            session.data.update(scenario.params)
            for _ in range(iterations):
                await scenario.func(session)

    asyncio.run(main())
    return rows
