"""The ``GET <prefix>`` snapshot: recent records folded into the requirements' shape.

The shape is the one the requirements document gives for performance metrics::

    {"timestamp": "2026-01-01T12:00:00.000Z", "route": "/api/cards",
     "metrics": {"navigationTime": 88.0, "apiResponseTime": 45.0,
                 "componentRenderTime": 12.0, "memoryUsage": 23.5, "errorCount": 0},
     "health": {"apiPolling": "healthy", "serverResponse": "good",
                "clientPerformance": "optimal"}}

The rules, over the records of the last ``window`` seconds (60 by default) that
are not perfnb's own (``source="perfnb"``) and not load traffic (``run_id`` set)
unless asked, restricted to one route when ``route`` is given (``"*"`` means all):

- ``navigationTime``: median ``duration_ms`` of ``navigation`` records, ms.
- ``apiResponseTime``: median ``duration_ms`` of the server's ``http`` records, ms.
- ``componentRenderTime``: median ``duration_ms`` of ``render`` records, ms.
- ``memoryUsage``: the newest server ``process`` sample named ``rss_bytes``, else
  the newest browser ``js_heap_bytes``, in MB (2**20 bytes); all routes.
- ``errorCount``: server ``http`` records with status ≥ 500 or an ``error_type``,
  plus browser records with an ``error_type``.
- ``apiPolling``: error share of the server's ``http`` records: ``failing`` at
  25 % or more, ``degraded`` at 5 % or more, else ``healthy``.
- ``serverResponse``: ``timeout`` when 5 % or more of the server's requests
  timed out (status 504 or 408, or ``error_type`` ``timeout``), ``slow`` when their
  95th percentile exceeds 500 ms, else ``good``.
- ``clientPerformance``: the worst Web Vital rating (75th percentile of LCP, INP,
  CLS, FID, FCP, TTFB against the web.dev thresholds): ``optimal``, ``degraded``
  or ``poor``.

A metric with no records in the window is ``null``; a health rule with no
records is ``"unknown"``. perfnb's health engine (``perfnb.analysis.health``, on
the notebook side) refines these rules with baselines, hysteresis and
per-client runaway detection; the thresholds here are the defaults of its
``HealthConfig`` (keep them in step).

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> recs = [{"time": t, "source": "server", "kind": "http", "route": "/a",
...          "status": 200, "duration_ms": 40.0}]
>>> build_snapshot(recs, now=t.timestamp() + 1)["metrics"]["apiResponseTime"]
40.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal, TypedDict

from perfnb.schema import Record

__all__ = ["Snapshot", "build_snapshot"]

#: web.dev thresholds: (good at or below, poor above).
VITAL_THRESHOLDS: Final[dict[str, tuple[float, float]]] = {
    "LCP": (2500.0, 4000.0),
    "INP": (200.0, 500.0),
    "FID": (100.0, 300.0),
    "CLS": (0.1, 0.25),
    "FCP": (1800.0, 3000.0),
    "TTFB": (800.0, 1800.0),
}
_MB: Final = 1024.0 * 1024.0


class SnapshotMetrics(TypedDict):
    navigationTime: float | None
    apiResponseTime: float | None
    componentRenderTime: float | None
    memoryUsage: float | None
    errorCount: int


class SnapshotHealth(TypedDict):
    apiPolling: Literal["healthy", "degraded", "failing", "unknown"]
    serverResponse: Literal["good", "slow", "timeout", "unknown"]
    clientPerformance: Literal["optimal", "degraded", "poor", "unknown"]


class Snapshot(TypedDict):
    """The snapshot document (see the module docs for the rules)."""

    timestamp: str
    route: str
    metrics: SnapshotMetrics
    health: SnapshotHealth


def _rank(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    values.sort()
    index = max(0, math.ceil(q * len(values)) - 1)
    return values[index]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _time(record: Record) -> float:
    stamp = record.get("time")
    return stamp.timestamp() if isinstance(stamp, datetime) else 0.0


def build_snapshot(
    records: Sequence[Record],
    *,
    now: float,
    route: str | None = None,
    window: float = 60.0,
    include_load: bool = False,
) -> Snapshot:
    """Fold ``records`` (oldest first) into the snapshot for ``route`` at ``now`` (epoch s)."""
    cutoff = now - window
    nav: list[float] = []
    api: list[float] = []
    render: list[float] = []
    vitals: dict[str, list[float]] = {}
    memory: float | None = None
    heap: float | None = None
    server_errors = browser_errors = timeouts = 0
    for rec in reversed(records):
        source = rec.get("source")
        if source == "perfnb" or (rec.get("run_id") and not include_load):
            continue
        if _time(rec) < cutoff:
            continue
        kind = rec.get("kind")
        if kind == "process":
            name = rec.get("name")
            value = rec.get("value")
            if value is not None and name == "rss_bytes" and memory is None:
                memory = value / _MB
            elif value is not None and name == "js_heap_bytes" and heap is None:
                heap = value / _MB
            continue
        if route is not None and rec.get("route") != route:
            continue
        duration = rec.get("duration_ms")
        error_type = rec.get("error_type")
        if kind == "http" and source == "server":
            status = rec.get("status") or 0
            if duration is not None:
                api.append(duration)
            if status >= 500 or error_type:
                server_errors += 1
            if status in (408, 504) or error_type == "timeout":
                timeouts += 1
            continue
        if source == "browser" and error_type:
            browser_errors += 1
        if kind == "navigation" and duration is not None:
            nav.append(duration)
        elif kind == "render" and duration is not None:
            render.append(duration)
        elif kind == "vital":
            name = rec.get("name")
            value = rec.get("value")
            if name in VITAL_THRESHOLDS and value is not None:
                vitals.setdefault(name, []).append(value)
    api.sort()
    metrics: SnapshotMetrics = {
        "navigationTime": _round(_rank(nav, 0.5)),
        "apiResponseTime": _round(_rank(api, 0.5)),
        "componentRenderTime": _round(_rank(render, 0.5)),
        "memoryUsage": _round(memory if memory is not None else heap),
        "errorCount": server_errors + browser_errors,
    }
    health: SnapshotHealth = {
        "apiPolling": _polling(len(api), server_errors),
        "serverResponse": _server(api, timeouts),
        "clientPerformance": _client(vitals),
    }
    millis = math.floor(now * 1000)
    stamp = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "timestamp": f"{stamp}.{millis % 1000:03d}Z",
        "route": route if route is not None else "*",
        "metrics": metrics,
        "health": health,
    }


def _polling(requests: int, errors: int) -> Literal["healthy", "degraded", "failing", "unknown"]:
    if requests == 0:
        return "unknown"
    share = errors / requests
    if share >= 0.25:
        return "failing"
    return "degraded" if share >= 0.05 else "healthy"


def _server(durations: list[float], timeouts: int) -> Literal["good", "slow", "timeout", "unknown"]:
    if not durations:
        return "unknown"
    if timeouts / len(durations) >= 0.05:
        return "timeout"
    p95 = _rank(durations, 0.95)
    return "slow" if p95 is not None and p95 > 500.0 else "good"


def _client(vitals: dict[str, list[float]]) -> Literal["optimal", "degraded", "poor", "unknown"]:
    if not vitals:
        return "unknown"
    worst = 0
    for name, values in vitals.items():
        good, poor = VITAL_THRESHOLDS[name]
        p75 = _rank(values, 0.75)
        if p75 is None:
            continue
        worst = max(worst, 2 if p75 > poor else 1 if p75 > good else 0)
    ratings: tuple[Literal["optimal", "degraded", "poor"], ...] = ("optimal", "degraded", "poor")
    return ratings[worst]
