"""Bottlenecks in load runs: which route degrades first as load grows, and where its time goes.

A run is cut into **levels** of offered load (users in the closed model, requests
per second in the open model); each level holds, per route, the requests, the
errors, a p95 and the mean time per request split into parts:

- ``db``: database time (Server-Timing ``db``);
- ``app``: the rest of the handler's time (Server-Timing ``app`` minus ``db``);
- ``network``: what the client waited beyond the server's time (transfer, the
  server's accept queue and event-loop backlog before the app saw the request);
- ``queueing``: open model only, the wait between the intended and the actual
  send (the generator could not send because every connection was busy).

A route **degrades** at the lowest level from which on (at that level and every
higher one with data) its p95 is over ``p95_factor`` × its low-load p95 (and at
least ``p95_min_increase_ms`` more), or its error rate is ``error_rate_increase``
above its low-load rate. The **bottleneck** is the route that degrades at the
lowest level (at the same level, the one whose p95 grew by the most ms); its
**cause** is the part whose mean grew most from the low-load level to the
degraded one.

Everything here is stdlib (the load room's floor), so the load summary itself can
carry the answer. :class:`~perfnb.load.levels.LevelRecorder` cuts a run's records
into levels; :func:`find_bottleneck` judges them; :func:`figures_of_cell` makes a
level's figures from the engine's own counts (as :func:`~perfnb.load.capacity.
find_capacity` does with its steps).

>>> low = Level(10, {"GET /a": RouteFigures(100, 0, 5.0, {"db": 1.0})})
>>> high = Level(50, {"GET /a": RouteFigures(400, 0, 40.0, {"db": 30.0})})
>>> b = find_bottleneck([low, high], unit="req/s")
>>> b.route, b.level, b.cause
('GET /a', 50, 'db')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from perfnb.errors import ConfigError
from perfnb.load.stats import Cell

__all__ = [
    "PARTS",
    "Bottleneck",
    "Level",
    "RouteFigures",
    "Thresholds",
    "figures_of_cell",
    "find_bottleneck",
    "split_parts",
]

#: The parts a request's time is split into, in the order they are shown.
PARTS: Final = ("db", "app", "server_other", "network", "queueing")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a route counts as degraded, relative to its own low-load figures."""

    p95_factor: float = 2.0
    p95_min_increase_ms: float = 10.0
    error_rate_increase: float = 0.05
    min_requests: int = 10

    def __post_init__(self) -> None:
        checks = (
            ("p95_factor", self.p95_factor, self.p95_factor > 1, "a number > 1"),
            ("p95_min_increase_ms", self.p95_min_increase_ms, self.p95_min_increase_ms >= 0,
             "a number ≥ 0"),
            ("error_rate_increase", self.error_rate_increase,
             0 < self.error_rate_increase <= 1, "a share in (0, 1]"),
            ("min_requests", self.min_requests, self.min_requests >= 1, "an integer ≥ 1"),
        )  # fmt: skip
        for name, value, ok, accepted in checks:
            if not ok:
                msg = f"{name}={value!r}: accepted: {accepted}"
                raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class RouteFigures:
    """One route at one level: requests, errors, p95 (ms) and mean ms per part."""

    requests: int
    errors: int
    p95_ms: float
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Failed share of requests."""
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Level:
    """One level of offered load and each route's figures there."""

    value: float
    routes: dict[str, RouteFigures]


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """The first route to degrade as load grew, and where its time went.

    ``route`` is empty when no route degraded. ``degraded_at`` gives every route's
    first degraded level (``None``: it held at every level), ``causes`` the part
    that grew most for each route that degraded. ``levels`` is the table behind
    the answer, one row per (level, route).
    """

    route: str
    level: float | None
    unit: str
    why: str
    cause: str
    baseline_level: float | None
    baseline_p95_ms: float
    p95_ms: float
    baseline_error_rate: float
    error_rate: float
    breakdown: dict[str, float]
    baseline_breakdown: dict[str, float]
    degraded_at: dict[str, float | None]
    causes: dict[str, str]
    levels: list[dict[str, Any]]

    @property
    def found(self) -> bool:
        """Whether some route degraded."""
        return bool(self.route)

    def describe(self) -> str:
        """One line for a summary.

        >>> find_bottleneck([], unit="users").describe()
        'bottleneck: none — no level had enough requests to judge'
        """
        if not self.found:
            return f"bottleneck: none — {self.why}"
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.breakdown.items() if v >= 0.05)
        return (
            f"bottleneck: {self.route} degraded first, at {_fmt(self.level)} {self.unit} "
            f"({self.why}); time mostly in {self.cause or 'unknown'}"
            + (f" [ms/request: {parts}]" if parts else "")
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["found"] = self.found
        return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _degraded(fig: RouteFigures, base: RouteFigures, th: Thresholds) -> str:
    limit = max(base.p95_ms * th.p95_factor, base.p95_ms + th.p95_min_increase_ms)
    if fig.p95_ms > limit:
        return f"p95 {fig.p95_ms:.1f} ms > {limit:.1f} ms (its low-load p95 {base.p95_ms:.1f} ms)"
    if fig.error_rate > base.error_rate + th.error_rate_increase:
        return f"error rate {fig.error_rate:.1%} (low load {base.error_rate:.1%})"
    return ""


def _cause(now: Mapping[str, float], before: Mapping[str, float]) -> str:
    if not now:
        return ""
    growth = {k: v - before.get(k, 0.0) for k, v in now.items()}
    best = max(growth, key=lambda k: growth[k])
    if growth[best] > 0:
        return best
    return max(now, key=lambda k: now[k])


def find_bottleneck(
    levels: Sequence[Level], *, unit: str, thresholds: Thresholds | None = None
) -> Bottleneck:
    """Judge ``levels`` (any order; sorted by value here) and name the first route to degrade.

    ``unit`` names the load (``"users"`` or ``"req/s"``) in the answer.
    """
    th = thresholds or Thresholds()
    ordered = sorted(levels, key=lambda lv: lv.value)
    table = [
        {
            "level": lv.value,
            "route": route,
            "requests": fig.requests,
            "error_rate": fig.error_rate,
            "p95_ms": fig.p95_ms,
            **{f"{k}_ms": v for k, v in fig.parts.items()},
        }
        for lv in ordered
        for route, fig in sorted(lv.routes.items())
    ]
    routes = sorted({r for lv in ordered for r in lv.routes})
    firsts: dict[str, tuple[Level, Level, str] | None] = {}
    for route in routes:
        seen = [lv for lv in ordered if lv.routes.get(route, _NONE).requests >= th.min_requests]
        firsts[route] = None
        if len(seen) < 2:
            continue
        base = seen[0]
        bad = [_degraded(lv.routes[route], base.routes[route], th) for lv in seen[1:]]
        # the first level from which on the route stays degraded (sustained, not a blip)
        for i in range(len(bad)):
            if all(bad[i:]):
                firsts[route] = (base, seen[i + 1], bad[i])
                break
    degraded_at = {r: (f[1].value if f else None) for r, f in firsts.items()}
    causes = {
        r: _cause(f[1].routes[r].parts, f[0].routes[r].parts)
        for r, f in firsts.items()
        if f is not None
    }
    hits = [(f[1].value, r, f) for r, f in firsts.items() if f is not None]
    if not hits:
        usable = [
            lv for lv in ordered if any(f.requests >= th.min_requests for f in lv.routes.values())
        ]
        judged = any(
            sum(lv.routes.get(r, _NONE).requests >= th.min_requests for lv in ordered) >= 2
            for r in routes
        )
        if judged:
            why = f"no route degraded up to {_fmt(ordered[-1].value)} {unit}"
        elif len(usable) == 1:
            why = (
                f"the run held one level of load ({_fmt(usable[0].value)} {unit}): nothing to "
                "compare; a ramp or stages show which route degrades first"
            )
        else:
            why = "no level had enough requests to judge"
        return Bottleneck("", None, unit, why, "", None, 0.0, 0.0, 0.0, 0.0, {}, {},
                          degraded_at, causes, table)  # fmt: skip

    def severity(hit: tuple[float, str, tuple[Level, Level, str]]) -> tuple[float, float]:
        # the lowest level first; at the same level, the route whose users lost the most
        # time (a fast route's p95 doubling on a busy machine is not the bottleneck)
        _, r, (base, at, _w) = hit
        return (hit[0], -(at.routes[r].p95_ms - base.routes[r].p95_ms))

    _, route, (base, at, why) = min(hits, key=severity)
    now, before = at.routes[route], base.routes[route]
    return Bottleneck(
        route=route,
        level=at.value,
        unit=unit,
        why=why,
        cause=_cause(now.parts, before.parts),
        baseline_level=base.value,
        baseline_p95_ms=before.p95_ms,
        p95_ms=now.p95_ms,
        baseline_error_rate=before.error_rate,
        error_rate=now.error_rate,
        breakdown=dict(now.parts),
        baseline_breakdown=dict(before.parts),
        degraded_at=degraded_at,
        causes=causes,
        levels=table,
    )


_NONE: Final = RouteFigures(0, 0, 0.0)


def split_parts(
    *, total: float, server: float | None, app: float | None, db: float, queue: float | None
) -> dict[str, float]:
    """Mean ms per request split into :data:`PARTS` (parts without data are left out).

    >>> split_parts(total=12.0, server=10.0, app=10.0, db=7.0, queue=None)
    {'db': 7.0, 'app': 3.0, 'server_other': 0.0, 'network': 2.0}
    """
    out: dict[str, float] = {}
    if app is not None:
        out["db"] = max(0.0, db)
        out["app"] = max(0.0, app - db)
        if server is not None:
            out["server_other"] = max(0.0, server - app)
    elif db:
        out["db"] = db
    if server is not None and total:
        out["network"] = max(0.0, total - server)
    if queue is not None:
        out["queueing"] = max(0.0, queue)
    return out


def figures_of_cell(cell: Cell, *, p95_ms: float | None = None) -> RouteFigures:
    """A route's figures from an engine :class:`~perfnb.load.stats.Cell` (whole histograms).

    The p95 is the corrected one when the cell has corrected latencies (open model).
    """
    latency = cell.corrected if cell.corrected.count else cell.latency
    parts: dict[str, float] = {}
    if cell.timed:
        n = cell.timed
        parts = split_parts(
            total=cell.timed_latency_ms / n,
            server=cell.server_ms / n,
            app=cell.app_ms / n,
            db=cell.db_ms / n,
            queue=(cell.corrected.mean - cell.latency.mean) if cell.corrected.count else None,
        )
    return RouteFigures(
        requests=cell.count,
        errors=cell.error_count,
        p95_ms=latency.percentile(95) if p95_ms is None else p95_ms,
        parts=parts,
    )
