"""Synthetic records for the health engine's tests (a fake clock, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from perfnb.schema import Record

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def http(
    t: float,
    *,
    route: str = "/api/cards",
    status: int = 200,
    duration: float = 10.0,
    source: str = "server",
    client: str | None = None,
    **extra: Any,
) -> Record:
    """One request record at ``T0 + t`` seconds."""
    record: dict[str, Any] = {
        "time": at(t),
        "source": source,
        "kind": "http",
        "route": route,
        "method": "GET",
        "status": status,
        "duration_ms": duration,
    }
    if client is not None:
        record["client"] = client
    record.update(extra)
    return record  # type: ignore[return-value]


def sample(t: float, value: float, *, name: str = "rss_bytes", source: str = "server") -> Record:
    """A process sample (``rss_bytes`` by default)."""
    return {
        "time": at(t),
        "source": source,
        "kind": "process",
        "service": "app",
        "name": name,
        "value": float(value),
        "unit": "bytes",
    }


def steady(
    seconds: float,
    *,
    start: float = 0.0,
    every: float = 0.1,
    route: str = "/api/cards",
    duration: float = 10.0,
) -> list[Record]:
    """Requests every ``every`` s on ``route`` with a small, varying latency."""
    out = []
    n = int(seconds / every)
    for i in range(n):
        jitter = (i * 7919 % 13) / 13.0  # deterministic spread of 0..1
        out.append(http(start + i * every, route=route, duration=duration * (0.8 + 0.4 * jitter)))
    return out


def polls(
    client: str, start: float, end: float, every: float, *, duration: float = 5.0
) -> list[Record]:
    """One client polling ``/api/poll`` every ``every`` s from ``start`` to ``end``."""
    out = []
    t = start
    while t < end:
        out.append(http(t, route="/api/poll", client=client, duration=duration))
        t += every
    return out


def alerts(out: list[Record], name: str | None = None, state: str = "raised") -> list[Record]:
    """The alert records of ``out`` (of one name, in one state)."""
    return [
        r
        for r in out
        if r["kind"] == "alert"
        and (name is None or r["name"] == name)
        and r["tags"]["state"] == state
    ]


def transitions(out: list[Record], name: str) -> list[tuple[str, str]]:
    """``(previous, state)`` of the health records of one state."""
    return [
        (r["tags"]["previous"], r["tags"]["state"])
        for r in out
        if r["kind"] == "health" and r["name"] == name
    ]
