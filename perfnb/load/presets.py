"""Preset load tests: the requirements document's scenarios, against any app via a mapping.

Each preset turns a few documented parameters into a scenario and a shape. The
demo app works out of the box (:data:`DEMO`); another app works through an
:class:`AppMapping` of its endpoints. Journey presets run over ``httpx`` sessions
(users are slow); API Stress runs on the lean engine.

=====================  ================================================================
preset                 what it does (parameters)
=====================  ================================================================
high_user_load         10–50 users; each creates a guest account, then a journey of
                       ``calls_per_user`` calls with ``think_time`` between them,
                       including the app's polling (users, ramp_up, duration)
api_stress             rapid-fire calls across every endpoint, closed (users) or open
                       (``rate``) model, on the lean engine
memory_pressure        large payloads (``payload_size`` bytes per card) and bulk
                       operations, then exports
network_slow           the high-user-load journey over a slow client network
                       (``latency_ms`` added per request, ``bandwidth_kbps`` cap)
login_storm            users sign in again and again (``think_time`` apart)
bulk_data              bulk imports of ``bulk_size`` cards and full exports
concurrent_navigation  page-like bursts: several API calls at once per navigation
=====================  ================================================================

>>> sorted(PRESETS)[:3]
['api_stress', 'bulk_data', 'concurrent_navigation']
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import httpx

from perfnb.errors import ConfigError, TargetError
from perfnb.load.engine import RUN_HEADER, Target
from perfnb.load.scenarios import Endpoint, Endpoints, Journey, JourneyFunc, Session
from perfnb.load.shapes import ConstantRate, Shape, Users

__all__ = [
    "DEMO",
    "PRESETS",
    "AppMapping",
    "Params",
    "Preset",
    "build_preset",
    "check_preset",
    "param_problem",
]


@dataclass(frozen=True, slots=True)
class AppMapping:
    """Where an app keeps the things the presets use (paths; ``{id}`` placeholders).

    The demo app's defaults: guests sign up with ``POST signup {"name"}`` and get a
    session cookie; items are created with ``POST items {"title", "body"}`` and
    answered with ``{"id"}``; ``bulk`` takes ``{"cards": [...]}``.
    """

    signup: str = "/api/guests"
    login: str = "/api/login"
    items: str = "/api/cards"
    item: str = "/api/cards/{id}"
    bulk: str = "/api/cards/bulk"
    export: str = "/api/cards/export"
    conversations: str = "/api/conversations"
    messages: str = "/api/conversations/{id}/messages"
    presence: str = "/api/presence"
    poll: str = "/api/poll"
    health: str = "/api/health"
    item_route: str = "/api/cards/{card_id}"
    messages_route: str = "/api/conversations/{conversation_id}/messages"


DEMO: Final = AppMapping()


@dataclass(frozen=True, slots=True)
class Params:
    """The custom parameters every preset understands (seconds, bytes, per second)."""

    users: int = 10
    duration: float = 60.0
    ramp_up: float = 0.0
    rate: float | None = None
    calls_per_user: int = 5
    think_time: float = 1.0
    payload_size: int = 10_000
    bulk_size: int = 100
    latency_ms: float = 300.0
    bandwidth_kbps: float = 256.0
    mapping: AppMapping = field(default_factory=AppMapping)


@dataclass(frozen=True, slots=True)
class Preset:
    """A named preset: its title, what it does, and its defaults."""

    name: str
    title: str
    description: str
    defaults: dict[str, Any]


PRESETS: Final[dict[str, Preset]] = {
    p.name: p
    for p in (
        Preset(
            "high_user_load",
            "High User Load",
            "10–50 users, each a guest running a realistic journey with polling",
            {"users": 20, "think_time": 1.0, "calls_per_user": 5},
        ),
        Preset(
            "api_stress",
            "API Stress",
            "rapid-fire calls across every endpoint (lean engine)",
            {"users": 20, "think_time": 0.0},
        ),
        Preset(
            "memory_pressure",
            "Memory Pressure",
            "large payloads and bulk operations; payload_size sets the data size",
            {"users": 5, "think_time": 0.2, "payload_size": 100_000},
        ),
        Preset(
            "network_slow",
            "Network Slow",
            "the user journey over a slow network (latency_ms, bandwidth_kbps)",
            {"users": 10, "think_time": 0.5},
        ),
        Preset(
            "login_storm",
            "Login Storm",
            "users signing in again and again",
            {"users": 30, "think_time": 0.05},
        ),
        Preset(
            "bulk_data",
            "Bulk Data",
            "bulk imports of bulk_size cards and full exports",
            {"users": 4, "think_time": 0.2, "bulk_size": 200},
        ),
        Preset(
            "concurrent_navigation",
            "Concurrent Navigation",
            "page-like bursts of concurrent API calls per navigation",
            {"users": 20, "think_time": 0.5},
        ),
    )
}


def _preset_name(name: str) -> str:
    given: object = name  # typed str, but configuration input may be anything
    key = name.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(given, str) else ""
    if key not in PRESETS:
        msg = f"preset {name!r} is unknown; accepted: {', '.join(sorted(PRESETS))}"
        raise ConfigError(msg)
    return key


# parameter -> (whole numbers only, lowest value, lowest value itself refused)
_RULES: Final[dict[str, tuple[bool, float, bool]]] = {
    "users": (True, 1, False),
    "duration": (False, 0, True),
    "ramp_up": (False, 0, False),
    "rate": (False, 0, True),
    "calls_per_user": (True, 1, False),
    "think_time": (False, 0, False),
    "payload_size": (True, 0, False),
    "bulk_size": (True, 1, False),
    "latency_ms": (False, 0, False),
    "bandwidth_kbps": (False, 0, True),
}


def param_problem(name: str, value: object) -> str | None:
    """What parameter ``name`` accepts when ``value`` does not fit it, else ``None``.

    Numbers only (``True`` is not one), finite, whole where a count is meant, and
    within the parameter's range.

    >>> param_problem("users", 0), param_problem("rate", float("inf")), param_problem("rate", 5)
    ('a whole number ≥ 1', 'a finite number > 0', None)
    """
    whole, lowest, strict = _RULES[name]
    bound = f"{'>' if strict else '≥'} {int(lowest)}"
    accepted = f"a whole number {bound}" if whole else f"a finite number {bound}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return accepted
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return accepted
    if not math.isfinite(number) or (whole and not number.is_integer()):
        return accepted
    if number < lowest or (strict and number == lowest):
        return accepted
    return None


def _check_params(p: Params) -> None:
    for name in _RULES:
        value = getattr(p, name)
        if name == "rate" and value is None:
            continue  # no rate: the closed model
        problem = param_problem(name, value)
        if problem is not None:
            msg = f"preset parameter {name}={value!r}: accepted: {problem}"
            raise ConfigError(msg)
    mapping: object = p.mapping
    if not isinstance(mapping, AppMapping):
        msg = f"preset parameter mapping={mapping!r}: accepted: an AppMapping"
        raise ConfigError(msg)


def check_preset(
    name: str, *, params: Params | None = None, overrides: dict[str, Any] | None = None
) -> tuple[str, Params, Shape]:
    """Check preset ``name`` with ``overrides`` without any request: its key, parameters, shape.

    :func:`build_preset` starts with this; a command checks its whole input with it
    before the first request (API Stress sets itself up with requests). Raises
    :class:`~perfnb.errors.ConfigError` naming the parameter, its value and what is
    accepted.

    >>> key, p, shape = check_preset("API-Stress", overrides={"rate": 50.0, "duration": 10})
    >>> key, shape.model, p.rate
    ('api_stress', 'open', 50.0)
    >>> check_preset("api_stress", overrides={"rate": float("nan")})
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: preset parameter rate=nan: accepted: a finite number > 0
    """
    key = _preset_name(name)
    base = params or Params()
    values = {**PRESETS[key].defaults, **(overrides or {})}
    known = set(Params.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        msg = f"preset parameter(s) {unknown} unknown; accepted: {', '.join(sorted(known))}"
        raise ConfigError(msg)
    p = replace(base, **values)
    _check_params(p)
    shape: Shape
    if p.rate is not None:
        shape = ConstantRate(p.rate, duration=p.duration)
    else:
        shape = Users(p.users, duration=p.duration, ramp_up=p.ramp_up)
    return key, p, shape


# -- journey steps ------------------------------------------------------------------
def _params(session: Session) -> Params:
    params = session.data.get("params")
    return params if isinstance(params, Params) else Params()


async def _sign_in(session: Session) -> None:
    if session.data.get("signed_in"):
        return
    m = _params(session).mapping
    response = await session.post(m.signup, json={"name": f"load-{session.user}"}, route=m.signup)
    response.raise_for_status()
    body = response.json()
    session.data["user_id"] = str(body.get("user", {}).get("id", ""))
    session.data["code"] = str(body.get("code", ""))
    session.data["signed_in"] = True


async def _create_item(session: Session, size: int = 200) -> int | None:
    m = _params(session).mapping
    payload = {"title": f"card {session.user}", "body": "x" * max(0, min(size, 4000))}
    response = await session.post(m.items, json=payload, route=m.items)
    if response.status_code >= 400:
        return None
    item_id = response.json().get("id")
    return int(item_id) if isinstance(item_id, int) else None


async def high_user_load(session: Session) -> None:
    """Sign in once, then ``calls_per_user`` calls of a browsing user, polling between."""
    p = _params(session)
    m = p.mapping
    await _sign_in(session)
    steps = ("list", "poll", "create", "get", "presence", "conversations", "poll", "update")
    for i in range(p.calls_per_user):
        step = steps[i % len(steps)]
        if step == "list":
            await session.get(m.items, route=m.items)
        elif step == "poll":
            await session.get(m.poll, route=m.poll)
        elif step == "create":
            session.data["card"] = await _create_item(session)
        elif step == "get" and session.data.get("card"):
            await session.get(m.item.format(id=session.data["card"]), route=m.item_route)
        elif step == "update" and session.data.get("card"):
            path = m.item.format(id=session.data["card"])
            await session.put(path, json={"title": "edited"}, route=m.item_route)
        elif step == "presence":
            await session.post(m.presence, json={"status": "active"}, route=m.presence)
        else:
            await session.get(m.conversations, route=m.conversations)
        await session.think()


async def network_slow(session: Session) -> None:
    """The high-user-load journey with added latency and a bandwidth cap."""
    p = _params(session)
    session.latency_s = p.latency_ms / 1000.0
    session.bytes_per_s = p.bandwidth_kbps * 1000.0 / 8.0
    await high_user_load(session)


async def login_storm(session: Session) -> None:
    """Sign up once, then sign in again and again with the guest's code."""
    p = _params(session)
    await _sign_in(session)
    body = {"user_id": session.data["user_id"], "code": session.data["code"]}
    await session.post(p.mapping.login, json=body, route=p.mapping.login)
    await session.think()


async def bulk_data(session: Session) -> None:
    """Bulk-import ``bulk_size`` cards, then export everything."""
    p = _params(session)
    m = p.mapping
    await _sign_in(session)
    size = max(1, min(p.bulk_size, 1000))
    cards = [{"title": f"bulk {i}", "body": "b" * 100} for i in range(size)]
    await session.post(m.bulk, json={"cards": cards}, route=m.bulk)
    await session.get(m.export, route=m.export)
    await session.think()


async def memory_pressure(session: Session) -> None:
    """Large payloads (``payload_size`` bytes spread over cards) in bulk, then exports."""
    p = _params(session)
    m = p.mapping
    await _sign_in(session)
    per_card = 4000
    count = max(1, min(1000, p.payload_size // per_card))
    cards = [{"title": f"big {i}", "body": "m" * per_card} for i in range(count)]
    await session.post(m.bulk, json={"cards": cards}, route=m.bulk)
    await session.get(m.export, route=m.export)
    await session.get(f"{m.export}?format=csv", route=m.export)
    await session.think()


async def concurrent_navigation(session: Session) -> None:
    """One navigation: the calls a page makes at once, then a pause."""
    m = _params(session).mapping
    await _sign_in(session)
    await asyncio.gather(
        session.get(m.items, route=m.items),
        session.get(m.conversations, route=m.conversations),
        session.get(m.presence, route=m.presence),
        session.get(m.poll, route=m.poll),
    )
    await session.think()


_JOURNEYS: Final[dict[str, JourneyFunc]] = {
    "high_user_load": high_user_load,
    "network_slow": network_slow,
    "login_storm": login_storm,
    "bulk_data": bulk_data,
    "memory_pressure": memory_pressure,
    "concurrent_navigation": concurrent_navigation,
}


# -- API stress: set up once, then fixed requests on the lean engine ----------------
def _created_id(response: httpx.Response) -> object:
    """The ``id`` of what a setup request created; 1 when the app answers otherwise."""
    try:
        body = response.json()
    except ValueError:  # not JSON: an app that does not fit the mapping
        return 1
    return body.get("id", 1) if isinstance(body, dict) else 1


def api_stress_endpoints(
    target: Target, *, run_id: str, mapping: AppMapping = DEMO, payload_size: int = 200
) -> Endpoints:
    """Sign in once, create one of each thing, and list a request for every endpoint."""
    m = mapping
    headers = {RUN_HEADER: run_id}
    with httpx.Client(base_url=target.url, headers=headers, timeout=10.0, trust_env=False) as c:
        try:
            signup = c.post(m.signup, json={"name": "api-stress"})
            if signup.status_code >= 400:
                msg = f"API stress setup: POST {m.signup} answered {signup.status_code}"
                raise TargetError(msg)
            cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
            card = _created_id(c.post(m.items, json={"title": "stress", "body": "s"}))
            convo = _created_id(c.post(m.conversations, json={"title": "stress"}))
        except httpx.HTTPError as exc:
            msg = f"target {target.url}: cannot set up API stress ({type(exc).__name__}: {exc})"
            raise TargetError(msg) from None
    js = (("Content-Type", "application/json"),)
    body = json.dumps({"title": "stress", "body": "x" * max(0, min(payload_size, 4000))}).encode()
    endpoints = [
        Endpoint("GET", m.health, route=m.health),
        Endpoint("GET", m.items, route=m.items, weight=3),
        Endpoint("POST", m.items, body=body, headers=js, route=m.items),
        Endpoint("GET", m.item.format(id=card), route=m.item_route, weight=3),
        Endpoint("PUT", m.item.format(id=card), body=body, headers=js, route=m.item_route),
        Endpoint("GET", m.export, route=m.export),
        Endpoint("GET", m.conversations, route=m.conversations, weight=2),
        Endpoint("GET", m.messages.format(id=convo), route=m.messages_route, weight=2),
        Endpoint(
            "POST",
            m.messages.format(id=convo),
            body=b'{"body": "hi"}',
            headers=js,
            route=m.messages_route,
        ),
        Endpoint("GET", m.presence, route=m.presence),
        Endpoint("POST", m.presence, body=b'{"status": "active"}', headers=js, route=m.presence),
        Endpoint("GET", m.poll, route=m.poll, weight=3),
    ]
    return Endpoints(endpoints, headers=(("Cookie", cookie),))


def build_preset(
    name: str,
    target: Target,
    *,
    run_id: str,
    params: Params | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Endpoints | Journey, Shape, Params]:
    """The scenario and shape of preset ``name``; ``overrides`` replace its defaults.

    >>> from perfnb.load.engine import check_target
    >>> scenario, shape, p = build_preset("login_storm", check_target("http://127.0.0.1:1"),
    ...                                   run_id="r", overrides={"users": 3, "duration": 5})
    >>> shape.tick(1.0), p.users
    (3.0, 3)
    """
    key, p, shape = check_preset(name, params=params, overrides=overrides)
    if key == "api_stress":
        scenario: Endpoints | Journey = replace(
            api_stress_endpoints(
                target, run_id=run_id, mapping=p.mapping, payload_size=p.payload_size
            ),
            think_time=p.think_time if p.rate is None else 0.0,
        )
    else:
        scenario = Journey(_JOURNEYS[key], think_time=p.think_time, params={"params": p})
    return scenario, shape, p


def preset_names() -> Iterable[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)
