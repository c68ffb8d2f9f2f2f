"""Profiles: what a period (or one load run) looked like, route by route.

A :class:`Profile` holds, per route, the number of requests, the errors (an
``error_type`` or a status ≥ 500) and a :class:`~perfnb.analysis.sketch.LatencySketch`
of ``duration_ms``, with the length of the period for throughput. :func:`measure`
reads one from a store: from the daily summaries when the window is whole UTC days,
else from the detail with one DuckDB query. Baselines
(:mod:`perfnb.analysis.compare`) are named profiles kept as JSON.

>>> p = Profile.of({"/a": [10.0, 12.0, 11.0]}, seconds=3)
>>> p.requests, p.rps("/a")
(3, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from perfnb.analysis.sketch import DEFAULT_ALPHA, MIN_VALUE, LatencySketch
from perfnb.errors import ConfigError, StoreError
from perfnb.times import TimeLike, to_utc

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["FORMAT", "Profile", "RouteStats", "StoreLike", "TimeLike", "measure"]

#: The ``format`` field of a profile's JSON document.
FORMAT: Final = "perfnb-baseline"
_VERSION: Final = 1
#: Throughput divides by at least this (s), so a one-record run is not infinitely fast.
_MIN_SECONDS: Final = 1.0


class StoreLike(Protocol):
    """What profiles and baselines need of a :class:`~perfnb.store.Store` (a room above)."""

    root: str
    fs: pafs.FileSystem
    local: bool

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame: ...


# -- profiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteStats:
    """One route of a profile: requests, errors and the sketch of the timed ones."""

    count: int
    errors: int
    sketch: LatencySketch

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "errors": self.errors, "sketch": self.sketch.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteStats:
        return cls(
            count=int(data["count"]),
            errors=int(data["errors"]),
            sketch=LatencySketch.from_dict(dict(data["sketch"])),
        )


@dataclass(frozen=True)
class Profile:
    """Per-route figures of one period or load run (a baseline once it has a ``name``).

    ``seconds`` is the length throughput divides by: ``end - start`` when both are
    given, else the span of the records measured (at least one second).

    >>> p = Profile.of({"/a": [10.0, 12.0, 11.0]}, errors={"/a": 1}, seconds=3)
    >>> p.routes["/a"].count, p.routes["/a"].errors, round(p.rps("/a"), 2)
    (3, 1, 1.0)
    """

    routes: Mapping[str, RouteStats]
    seconds: float
    start: datetime | None = None
    end: datetime | None = None
    run_id: str | None = None
    sources: tuple[str, ...] | None = ("server",)
    kinds: tuple[str, ...] | None = ("http",)
    services: tuple[str, ...] | None = None
    name: str | None = None
    created: datetime | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        durations: Mapping[str, npt.ArrayLike],
        *,
        errors: Mapping[str, int] | None = None,
        seconds: float,
    ) -> Profile:
        """A profile from plain arrays of ``duration_ms`` per route (tests, HAR files)."""
        routes = {}
        for route, values in durations.items():
            sketch = LatencySketch.of(values)
            routes[route] = RouteStats(sketch.count, int((errors or {}).get(route, 0)), sketch)
        return cls(routes=routes, seconds=max(float(seconds), _MIN_SECONDS))

    def rps(self, route: str) -> float:
        """Requests per second of ``route`` (0 when the route is absent)."""
        stats = self.routes.get(route)
        return stats.count / self.seconds if stats else 0.0

    @property
    def requests(self) -> int:
        return sum(s.count for s in self.routes.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON document a baseline file holds."""
        return {
            "format": FORMAT,
            "version": _VERSION,
            "name": self.name,
            "created": _iso(self.created),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "seconds": self.seconds,
            "run_id": self.run_id,
            "sources": _listed(self.sources),
            "kinds": _listed(self.kinds),
            "services": _listed(self.services),
            "meta": dict(self.meta),
            "routes": {route: stats.to_dict() for route, stats in sorted(self.routes.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """The profile :meth:`to_dict` wrote (raises :class:`StoreError` otherwise)."""
        if data.get("format") != FORMAT:
            raise StoreError(f"format: got {data.get('format')!r}; expected {FORMAT!r}")
        if data.get("version") != _VERSION:
            raise StoreError(f"version: got {data.get('version')!r}; this perfnb reads {_VERSION}")
        try:
            return cls(
                routes={str(r): RouteStats.from_dict(s) for r, s in data["routes"].items()},
                seconds=float(data["seconds"]),
                start=_from_iso(data.get("start")),
                end=_from_iso(data.get("end")),
                run_id=data.get("run_id"),
                sources=_tupled(data.get("sources")),
                kinds=_tupled(data.get("kinds")),
                services=_tupled(data.get("services")),
                name=data.get("name"),
                created=_from_iso(data.get("created")),
                meta={str(k): str(v) for k, v in (data.get("meta") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"not a baseline document ({type(exc).__name__}: {exc})") from None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _from_iso(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _listed(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _tupled(values: object) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)  # type: ignore[attr-defined]


def _utc(value: TimeLike, name: str) -> datetime | None:
    return to_utc(value, name=name)


def _strings(name: str, values: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    listed = (values,) if isinstance(values, str) else tuple(values)
    if not all(isinstance(v, str) for v in listed):
        raise ConfigError(f"{name}: got {values!r}; expected strings")
    return listed


# The detail query: one row per route and sketch bucket. Keys are computed the way
# bucket_keys computes them (ceil(ln(x) / ln(gamma))), so millions of rows become a
# few thousand before they leave DuckDB.
_DETAIL_SQL: Final = """
WITH picked AS (
    SELECT coalesce(CAST(route AS VARCHAR), '(none)') AS route,
           CASE WHEN duration_ms >= 0 THEN duration_ms END AS d,
           (error_type IS NOT NULL OR coalesce(status, 0) >= 500) AS failed,
           time
    FROM events
    WHERE {where}
)
SELECT route,
       CASE WHEN d > {min_value} THEN CAST(ceil(ln(d) * {scale!r}) AS BIGINT) END AS key,
       coalesce(d <= {min_value}, false) AS zero,
       count(*) AS n,
       count(*) FILTER (WHERE failed) AS errors,
       count(d) AS timed,
       sum(d) AS total,
       min(d) AS lo,
       max(d) AS hi,
       min(time) AS first,
       max(time) AS last
FROM picked
GROUP BY ALL
"""


def measure(
    store: StoreLike,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    run_id: str | None = None,
    sources: Sequence[str] | None = ("server",),
    kinds: Sequence[str] | None = ("http",),
    services: Sequence[str] | None = None,
    use_summaries: bool | None = None,
) -> Profile:
    """The per-route profile of ``[start, end)`` — real traffic, or the load run ``run_id``.

    By default it takes the server's view of each request (``source="server"``,
    ``kind="http"``); a load run seen only by the load engine needs
    ``sources=("load",)``. A window of whole UTC days is read from the store's
    daily summaries (their sketches merged) when the store keeps them; any other
    window from the detail, with one DuckDB query that computes the sketch buckets
    in SQL. ``use_summaries`` forces one way (``True`` needs whole days).

    >>> import tempfile
    >>> from perfnb.store import Store
    >>> measure(Store(tempfile.mkdtemp()), start="2026-01-01", end="2026-01-02").requests
    0
    """
    first, last = _utc(start, "start"), _utc(end, "end")
    if first is not None and last is not None and last <= first:
        raise ConfigError(f"end: got {last.isoformat()}; expected a time after start {first}")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise ConfigError(f"run_id: got {run_id!r}; expected a non-empty run id, or None")
    picked = {
        "source": _strings("sources", sources),
        "kind": _strings("kinds", kinds),
        "service": _strings("services", services),
    }
    whole_days = (
        first is not None and last is not None and _is_midnight(first) and _is_midnight(last)
    )
    if use_summaries and not whole_days:
        raise ConfigError(
            "use_summaries: True needs start and end on UTC midnights (whole days); "
            f"got start={start!r}, end={end!r}"
        )
    summaries = getattr(store, "summaries", None)
    if use_summaries is None:
        use_summaries = whole_days and callable(summaries)
    if use_summaries and callable(summaries) and first is not None and last is not None:
        rows = summaries(
            first,
            last,
            sources=picked["source"],
            kinds=picked["kind"],
            services=picked["service"],
            run_ids=None if run_id is None else [run_id],
            sketches=True,
        )
        return Profile(
            routes=_routes_from_summaries(rows),
            seconds=max((last - first).total_seconds(), _MIN_SECONDS),
            start=first,
            end=last,
            run_id=run_id,
            sources=picked["source"],
            kinds=picked["kind"],
            services=picked["service"],
            meta={"read_from": "summaries"},
        )
    where: list[str] = []
    params: list[Any] = []
    if first is not None:
        # the partition column lets DuckDB skip whole days before it reads a footer
        where += ["date >= ?", "time >= ?"]
        params += [first.date(), first]
    if last is not None:
        where += ["date <= ?", "time < ?"]
        params += [last.date(), last]
    for column, values in picked.items():
        if values is not None:
            where.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "false")
            params.extend(values)
    if run_id is None:
        where.append("run_id IS NULL")
    else:
        where.append("run_id = ?")
        params.append(run_id)
    scale = 1.0 / math.log((1.0 + DEFAULT_ALPHA) / (1.0 - DEFAULT_ALPHA))
    query = _DETAIL_SQL.format(where=" AND ".join(where), min_value=MIN_VALUE, scale=scale)
    rows = store.sql(query, params)
    routes = _routes_from_buckets(rows)
    span_start = first if first is not None else _min_time(rows)
    span_end = last if last is not None else _max_time(rows)
    seconds = _MIN_SECONDS
    if span_start is not None and span_end is not None:
        seconds = max((span_end - span_start).total_seconds(), _MIN_SECONDS)
    return Profile(
        routes=routes,
        seconds=seconds,
        start=span_start,
        end=span_end,
        run_id=run_id,
        sources=picked["source"],
        kinds=picked["kind"],
        services=picked["service"],
        meta={"read_from": "detail"},
    )


def _is_midnight(moment: datetime) -> bool:
    return moment.time() == time()


def _routes_from_summaries(rows: pd.DataFrame) -> dict[str, RouteStats]:
    """Daily summary rows (with their sketches) merged per route."""
    out: dict[str, RouteStats] = {}
    if rows.empty:
        return out
    routes = rows["route"].astype(object).where(rows["route"].notna(), "(none)")
    for route, group in rows.groupby(routes, sort=True):
        sketch = LatencySketch()
        for keys, counts, zeros, total, lo, hi in zip(
            group["duration_keys"],
            group["duration_counts"],
            group["duration_zeros"],
            group["duration_sum_ms"],
            group["duration_min_ms"],
            group["duration_max_ms"],
            strict=True,
        ):
            timed = pd.notna(lo)
            sketch.merge(
                LatencySketch.from_arrays(
                    np.asarray(keys if keys is not None else [], dtype=np.int64),
                    np.asarray(counts if counts is not None else [], dtype=np.int64),
                    zeros=int(zeros),
                    total=float(total) if timed else None,
                    minimum=float(lo) if timed else None,
                    maximum=float(hi) if timed else None,
                )
            )
        out[str(route)] = RouteStats(int(group["count"].sum()), int(group["errors"].sum()), sketch)
    return out


def _min_time(rows: pd.DataFrame) -> datetime | None:
    return None if rows.empty else pd.Timestamp(rows["first"].min()).to_pydatetime()


def _max_time(rows: pd.DataFrame) -> datetime | None:
    if rows.empty:
        return None
    # the last record is inside the span: end just after it
    return pd.Timestamp(rows["last"].max()).to_pydatetime() + timedelta(microseconds=1)


def _routes_from_buckets(rows: pd.DataFrame) -> dict[str, RouteStats]:
    out: dict[str, RouteStats] = {}
    for route, group in rows.groupby("route", sort=True):
        bucketed = group[group["key"].notna()]
        zeros = group[group["zero"].astype(bool)]
        timed = int(group["timed"].sum())
        sketch = LatencySketch.from_arrays(
            bucketed["key"].to_numpy(dtype=np.int64),
            bucketed["n"].to_numpy(dtype=np.int64),
            zeros=int(zeros["n"].sum()),
            total=float(group["total"].sum()) if timed else None,
            minimum=float(group["lo"].min()) if timed else None,
            maximum=float(group["hi"].max()) if timed else None,
        )
        out[str(route)] = RouteStats(int(group["n"].sum()), int(group["errors"].sum()), sketch)
    return out
