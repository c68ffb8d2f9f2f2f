"""Per-second, per-route load statistics: built in workers, merged in the controller.

A worker adds every finished request to a :class:`Stats`; every fraction of a
second it hands over what it has (:meth:`Stats.drain`) as plain data that pickles
cheaply, and the controller merges the pieces by (second, route, method). Because
histograms merge exactly, the run's percentiles come from every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfnb.collect.servertiming import parse_server_timing
from perfnb.load.histogram import Histogram

__all__ = ["Cell", "Detail", "Stats"]

#: One request kept in full (low rates): (epoch µs, route, method, status, duration µs,
#: ttfb µs, response bytes, error, error message, corrected µs or -1, server-timing).
Detail = tuple[int, str, str, int, int, int, int, str, str, int, str]


@dataclass(slots=True)
class Cell:
    """What happened on one route in one second.

    ``latency`` and ``corrected`` hold the requests that succeeded; a failed request
    (transport error, timeout, HTTP 4xx/5xx) is counted in ``errors`` and its real
    elapsed time kept apart in ``failed``, so failures never pull the success
    percentiles down (a refused connection fails in microseconds).
    """

    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    response_bytes: int = 0
    latency: Histogram = field(default_factory=Histogram)
    corrected: Histogram = field(default_factory=Histogram)
    failed: Histogram = field(default_factory=Histogram)
    # Server-Timing sums (ms) over the ``timed`` responses that carried the header
    timed: int = 0
    server_ms: float = 0.0
    app_ms: float = 0.0
    db_ms: float = 0.0
    timed_latency_ms: float = 0.0

    def merge(self, other: Cell) -> Cell:
        """Add ``other`` into this cell."""
        self.count += other.count
        for k, n in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + n
        for s, n in other.statuses.items():
            self.statuses[s] = self.statuses.get(s, 0) + n
        self.response_bytes += other.response_bytes
        self.latency.merge(other.latency)
        self.corrected.merge(other.corrected)
        self.failed.merge(other.failed)
        self.timed += other.timed
        self.server_ms += other.server_ms
        self.app_ms += other.app_ms
        self.db_ms += other.db_ms
        self.timed_latency_ms += other.timed_latency_ms
        return self

    def breakdown(self) -> dict[str, float]:
        """Mean time per request (ms) split by Server-Timing: app, db, other server, network.

        Empty when no response carried Server-Timing.
        """
        if not self.timed:
            return {}
        n = self.timed
        server = self.server_ms / n
        app, db = self.app_ms / n, self.db_ms / n
        return {
            "total_ms": self.timed_latency_ms / n,
            "server_ms": server,
            "app_ms": app,
            "db_ms": db,
            "network_ms": max(0.0, self.timed_latency_ms / n - server),
        }

    @property
    def error_count(self) -> int:
        """Requests that failed: transport errors, timeouts and HTTP 4xx/5xx."""
        return sum(self.errors.values())

    def to_wire(self) -> dict[str, Any]:
        """Plain data for the pipe between processes."""
        return {
            "count": self.count,
            "errors": self.errors,
            "statuses": self.statuses,
            "response_bytes": self.response_bytes,
            "latency": self.latency.to_dict(),
            "corrected": self.corrected.to_dict(),
            "failed": self.failed.to_dict(),
            "timing": [self.timed, self.server_ms, self.app_ms, self.db_ms, self.timed_latency_ms],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Cell:
        """The inverse of :meth:`to_wire`."""
        return cls(
            count=int(data["count"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            statuses={int(k): int(v) for k, v in data["statuses"].items()},
            response_bytes=int(data["response_bytes"]),
            latency=Histogram.from_dict(data["latency"]),
            corrected=Histogram.from_dict(data["corrected"]),
            failed=Histogram.from_dict(data["failed"]),
            timed=int(data["timing"][0]),
            server_ms=float(data["timing"][1]),
            app_ms=float(data["timing"][2]),
            db_ms=float(data["timing"][3]),
            timed_latency_ms=float(data["timing"][4]),
        )


def classify_status(status: int) -> str:
    """The error type of an HTTP status, or "" when it counts as a success.

    >>> classify_status(200), classify_status(503), classify_status(429)
    ('', 'http_5xx', 'http_4xx')
    """
    if status >= 500:
        return "http_5xx"
    if status >= 400:
        return "http_4xx"
    return ""


class Stats:
    """The worker-side accumulator.

    >>> s = Stats()
    >>> s.add(1_700_000_000_000_000, "/a", "GET", 200, 1_500, 900, 12, "", "", -1, "")
    >>> [key for key in s.drain()["cells"]]
    [(1700000000, '/a', 'GET')]
    """

    def __init__(self, *, keep_details: bool = True) -> None:
        self.cells: dict[tuple[int, str, str], Cell] = {}
        self.details: list[Detail] = []
        self.keep_details = keep_details
        self.send_lag = Histogram()
        self.dropped = 0
        self.reconnects = 0
        self.total = 0

    def add(
        self,
        epoch_us: int,
        route: str,
        method: str,
        status: int,
        duration_us: int,
        ttfb_us: int,
        response_bytes: int,
        error: str,
        error_message: str,
        corrected_us: int,
        server_timing: str,
    ) -> None:
        """Count one finished request (``corrected_us`` is -1 outside the open model).

        ``duration_us`` is the request's real elapsed time, failed or not.
        """
        key = (epoch_us // 1_000_000, route, method)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        cell.count += 1
        self.total += 1
        if not error:
            error = classify_status(status)
        cell.statuses[status] = cell.statuses.get(status, 0) + 1
        cell.response_bytes += response_bytes
        if error:
            cell.errors[error] = cell.errors.get(error, 0) + 1
            cell.failed.record(duration_us)
        else:
            cell.latency.record(duration_us)
            if corrected_us >= 0:
                cell.corrected.record(corrected_us)
        if server_timing:
            self._add_timing(cell, server_timing, duration_us)
        if self.keep_details:
            self.details.append(
                (
                    epoch_us,
                    route,
                    method,
                    status,
                    duration_us,
                    ttfb_us,
                    response_bytes,
                    error,
                    error_message,
                    corrected_us,
                    server_timing,
                )
            )

    @staticmethod
    def _add_timing(cell: Cell, header: str, duration_us: int) -> None:
        metrics = {m.name: m.dur for m in parse_server_timing(header)}
        app = metrics.get("app", 0.0)
        server = metrics.get("total", app)
        cell.timed += 1
        cell.server_ms += server
        cell.app_ms += app
        cell.db_ms += metrics.get("db", 0.0)
        cell.timed_latency_ms += duration_us / 1000.0

    def drain(self) -> dict[str, Any]:
        """Hand over everything counted since the last drain, and start afresh."""
        out = {
            "cells": {k: c.to_wire() for k, c in self.cells.items()},
            "details": self.details,
            "send_lag": self.send_lag.to_dict(),
            "dropped": self.dropped,
            "reconnects": self.reconnects,
        }
        self.cells = {}
        self.details = []
        self.send_lag = Histogram()
        self.dropped = 0
        self.reconnects = 0
        return out
