"""Per-second buckets in the kernel: what the live dashboard draws, never raw points.

:class:`Aggregator` takes records as they stream in and keeps, for each second
of the last ``max_window`` seconds, small cells of raw figures per
``(route, source, load or not, instance)``: enough to summarise the second again
under other filters (routes, sources, app instances or hosts, load and perfnb's
own traffic in or out) without going back to the stream. At most
``max_instances`` instances (``tags["instance"]``, one per app process) are kept
apart within the window; records of further ones count as ``"(other)"``, so
recycled workers cannot grow the cells without bound. A summary
(:class:`~perfnb.widgets._protocols.SecondSummary`) holds per-route p50/p95/p99,
throughput, errors, the server/network split, process memory and CPU, Web Vitals
and the polling cadence.

Summaries are cached per second; :meth:`Aggregator.take_dirty` returns the seconds
changed since the last call, so the dashboard sends only those. The cells, the
filters and the summary of one second are in :mod:`perfnb.widgets.buckets`.

>>> from datetime import datetime, UTC
>>> agg = Aggregator(clock=lambda: 100.5)
>>> t = datetime.fromtimestamp(100.2, UTC)
>>> agg.add_records([{"time": t, "source": "server", "kind": "http",
...                   "route": "/api/x", "status": 200, "duration_ms": 12.0}])
1
>>> [s["lat"]["/api/x"] for s in agg.summaries()]
[[12.0, 12.0, 12.0]]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

import numpy as np

from perfnb.widgets._protocols import SecondSummary
from perfnb.widgets.buckets import (
    CLIENT_SOURCES,
    HTTP_KINDS,
    TIMEOUT_STATUSES,
    Cell,
    Filters,
    Second,
    is_error,
    selected,
    summarise,
)
from perfnb.widgets.instances import OTHER_INSTANCE, instance_in

__all__ = ["Aggregator", "Filters", "is_error"]

_MB: Final = 1024.0 * 1024.0


class Aggregator:
    """Per-second buckets of records, summarised under :class:`Filters`.

    Thread-safe: the stream's subscription thread adds records while the kernel's
    thread changes filters or asks for summaries.
    """

    def __init__(
        self,
        *,
        max_window: int = 600,
        max_instances: int = 64,
        polling_routes: Callable[[str], bool] | None = None,
        filters: Filters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_window = max_window
        self.max_instances = max_instances
        self.filters = filters or Filters()
        self._is_poll = polling_routes or (lambda route: "poll" in route.lower())
        self._clock = clock
        self._seconds: dict[int, Second] = {}
        self._cache: dict[int, SecondSummary] = {}
        self._dirty: set[int] = set()
        self._last_poll: dict[tuple[str, str, str], float] = {}
        self._routes: set[str] = set()
        self._sources: set[str] = set()
        # instance -> the last second it was counted in (kept to the window)
        self._instances: dict[str, int] = {}
        self._has_server_http = False
        self._lock = threading.Lock()
        self.stats = {"records": 0, "late": 0, "ignored": 0}

    # -- ingest ---------------------------------------------------------------------------
    def add_records(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Add records (dicts of the record schema); returns how many were counted."""
        added = 0
        with self._lock:
            oldest = int(self._clock()) - self.max_window
            # the window moves on first, so instances gone from it free their places
            self._evict(oldest)
            for rec in records:
                stamp = rec.get("time")
                if stamp is None:
                    self.stats["ignored"] += 1
                    continue
                when = stamp.timestamp()
                if self._add(
                    when,
                    oldest,
                    rec.get("source") or "",
                    rec.get("kind") or "",
                    rec.get("route"),
                    rec.get("status"),
                    rec.get("duration_ms"),
                    rec.get("server_ms"),
                    rec.get("error_type"),
                    rec.get("run_id"),
                    rec.get("client"),
                    rec.get("name"),
                    rec.get("value"),
                    instance_in(rec.get("tags")),
                ):
                    added += 1
        return added

    def add_frame(self, frame: Any) -> int:
        """Add the rows of a stream frame (a pandas DataFrame of the record schema)."""
        if frame is None or len(frame) == 0:
            return 0
        cols: dict[str, list[Any]] = {}
        for name in (
            "time",
            "source",
            "kind",
            "route",
            "status",
            "duration_ms",
            "server_ms",
            "error_type",
            "run_id",
            "client",
            "name",
            "value",
        ):
            if name in frame.columns:
                series = frame[name]
                if name == "time":
                    # whatever the unit the frame keeps, count nanoseconds then seconds
                    nanos = series.astype("datetime64[ns, UTC]").astype("int64")
                    cols[name] = (nanos / 1e9).tolist()
                else:
                    cols[name] = series.astype(object).where(series.notna(), None).tolist()
            else:
                cols[name] = [None] * len(frame)
        if "tags" in frame.columns:
            cols["instance"] = [instance_in(tags) for tags in frame["tags"]]
        else:
            cols["instance"] = [""] * len(frame)
        added = 0
        with self._lock:
            oldest = int(self._clock()) - self.max_window
            self._evict(oldest)
            for row in zip(*cols.values(), strict=True):
                if self._add(row[0], oldest, row[1] or "", row[2] or "", *row[3:]):
                    added += 1
        return added

    def _add(
        self,
        when: float,
        oldest: int,
        source: str,
        kind: str,
        route: str | None,
        status: int | None,
        duration: float | None,
        server_ms: float | None,
        error_type: str | None,
        run_id: str | None,
        client: str | None,
        name: str | None,
        value: float | None,
        instance: str,
    ) -> bool:
        second = int(when)
        if second < oldest:
            self.stats["late"] += 1
            return False
        if instance not in self._instances and len(self._instances) >= self.max_instances:
            instance = OTHER_INSTANCE
        bucket = self._seconds.get(second)
        if bucket is None:
            bucket = self._seconds[second] = Second()
        bucket.records += 1
        self.stats["records"] += 1
        is_load = bool(run_id)
        perfnb_own = source == "perfnb" or kind == "overhead"
        if kind in HTTP_KINDS and duration is not None:
            key = (route or "(unknown)", source, is_load, instance)
            cells = bucket.perfnb_cells if perfnb_own else bucket.cells
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = Cell()
                self._routes.add(key[0])
                self._sources.add(source)
            cell.durations.append(duration)
            if is_error(status, error_type):
                cell.errors += 1
                if status in TIMEOUT_STATUSES or (error_type and "timeout" in error_type.lower()):
                    cell.timeouts += 1
            if server_ms is not None and source in CLIENT_SOURCES:
                cell.srv_sum += min(server_ms, duration)
                cell.net_sum += max(0.0, duration - server_ms)
                cell.split += 1
            if source == "server":
                self._has_server_http = True
            if self._is_poll(key[0]):
                cell.polls += 1
                if client:
                    last_key = (client, key[0], source)
                    last = self._last_poll.get(last_key)
                    if last is not None and 0 < when - last < 600:
                        cell.poll_intervals.append(when - last)
                    self._last_poll[last_key] = when
        elif kind == "process" and name and value is not None:
            bucket.process.setdefault(instance, {})[name] = float(value)
        elif kind == "vital" and name and value is not None:
            bucket.vitals.setdefault(instance, {}).setdefault(name, []).append(float(value))
        else:
            self.stats["ignored"] += 1
            bucket.records -= 1
            self.stats["records"] -= 1
            return False
        if self._instances.get(instance, oldest - 1) < second:
            self._instances[instance] = second
        self._dirty.add(second)
        self._cache.pop(second, None)
        return True

    def _evict(self, oldest: int) -> None:
        for second in [s for s in self._seconds if s < oldest]:
            del self._seconds[second]
            self._cache.pop(second, None)
            self._dirty.discard(second)
        gone = [name for name, last in self._instances.items() if last < oldest]
        for name in gone:
            del self._instances[name]
        if len(self._last_poll) > 10_000:
            # clients that stopped polling long ago are forgotten; the map stays bounded
            cutoff = self._clock() - self.max_window
            self._last_poll = {k: v for k, v in self._last_poll.items() if v >= cutoff}

    # -- filters ----------------------------------------------------------------------
    def set_filters(self, **changes: Any) -> Filters:
        """Change filters (fields of :class:`Filters`); every cached summary is redone."""
        with self._lock:
            for key in ("routes", "sources", "instances"):
                if key in changes:
                    changes[key] = frozenset(changes[key] or ())
            self.filters = replace(self.filters, **changes)
            self._cache.clear()
            self._dirty = set(self._seconds)
            return self.filters

    @property
    def routes(self) -> list[str]:
        """Every route seen in the window's HTTP records, sorted."""
        with self._lock:
            return sorted(self._routes)

    @property
    def sources(self) -> list[str]:
        with self._lock:
            return sorted(self._sources)

    @property
    def instances(self) -> list[str]:
        """Every instance counted in the window, sorted (``""``: records naming none)."""
        with self._lock:
            return sorted(self._instances)

    def effective_sources(self) -> frozenset[str]:
        """The sources the charts count now (resolving "auto")."""
        if self.filters.sources:
            return self.filters.sources
        if self._has_server_http:
            return frozenset({"server"})
        return frozenset(self._sources) | frozenset({"client", "load", "browser"})

    # -- summaries ----------------------------------------------------------------------
    def summaries(self, *, window: int | None = None) -> list[SecondSummary]:
        """Each second's summary in the last ``window`` s (default: all kept), oldest first."""
        with self._lock:
            sources = self.effective_sources()
            start = int(self._clock()) - (window or self.max_window)
            out = []
            for second in sorted(s for s in self._seconds if s >= start):
                cached = self._cache.get(second)
                if cached is None:
                    cached = self._cache[second] = summarise(
                        second, self._seconds[second], self.filters, sources
                    )
                out.append(cached)
            return out

    def take_dirty(self) -> list[SecondSummary]:
        """Summaries of the seconds changed since the last call, oldest first."""
        with self._lock:
            sources = self.effective_sources()
            dirty, self._dirty = sorted(self._dirty), set()
            out = []
            for second in dirty:
                bucket = self._seconds.get(second)
                if bucket is None:
                    continue
                summary = self._cache[second] = summarise(second, bucket, self.filters, sources)
                out.append(summary)
            return out

    def window_figures(self, seconds: int) -> dict[str, Any]:
        """Figures over the last ``seconds`` under the filters, for the health rules.

        Returns ``count``, ``errors``, ``timeouts``, ``durations`` (np.ndarray),
        ``polls``, ``poll_errors``, ``poll_intervals``, ``last_poll_age`` (s or None),
        ``vitals`` (name -> list) and ``rss`` (MB samples).
        """
        with self._lock:
            now = self._clock()
            sources = self.effective_sources()
            start = int(now) - seconds
            parts: list[np.ndarray[Any, Any]] = []
            errors = timeouts = polls = poll_errors = 0
            intervals: list[float] = []
            last_poll: int | None = None
            vitals: dict[str, list[float]] = {}
            rss: list[float] = []
            for second, bucket in self._seconds.items():
                if second < start:
                    continue
                for (route, _source, _load, _inst), cell in selected(bucket, self.filters, sources):
                    parts.append(np.frombuffer(cell.durations, dtype=np.float32))
                    errors += cell.errors
                    timeouts += cell.timeouts
                    if cell.polls:
                        polls += cell.polls
                        poll_errors += cell.errors if self._is_poll(route) else 0
                        intervals.extend(cell.poll_intervals)
                        last_poll = second if last_poll is None else max(last_poll, second)
                for name, values in bucket.vitals_of(self.filters.instances).items():
                    vitals.setdefault(name, []).extend(values)
                sample = bucket.process_value("rss_bytes", self.filters.instances)
                if sample is not None:
                    rss.append(sample / _MB)
            durations = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
            return {
                "count": len(durations),
                "errors": errors,
                "timeouts": timeouts,
                "durations": durations,
                "polls": polls,
                "poll_errors": poll_errors,
                "poll_intervals": intervals,
                "last_poll_age": None if last_poll is None else max(0.0, now - last_poll - 1),
                "vitals": vitals,
                "rss": rss,
            }

    def route_figures(self, seconds: int) -> dict[str, dict[str, Any]]:
        """Per route over the last ``seconds``: count, errors, timeouts and durations."""
        with self._lock:
            sources = self.effective_sources()
            start = int(self._clock()) - seconds
            parts: dict[str, list[np.ndarray[Any, Any]]] = {}
            out: dict[str, dict[str, Any]] = {}
            for second, bucket in self._seconds.items():
                if second < start:
                    continue
                for (route, _source, _load, _inst), cell in selected(bucket, self.filters, sources):
                    fig = out.setdefault(route, {"count": 0, "errors": 0, "timeouts": 0})
                    fig["count"] += len(cell.durations)
                    fig["errors"] += cell.errors
                    fig["timeouts"] += cell.timeouts
                    parts.setdefault(route, []).append(
                        np.frombuffer(cell.durations, dtype=np.float32)
                    )
            for route, fig in out.items():
                fig["durations"] = np.concatenate(parts[route])
            return out
