"""One second of the live dashboard: raw figures per route, source and instance, and its summary.

:class:`Second` holds, for one second, a :class:`Cell` of raw figures per
``(route, source, load or not, instance)`` (perfnb's own traffic apart), the
last process sample and the Web Vitals of each instance (``""``: records naming
none). :func:`summarise` turns it into the
:class:`~perfnb.widgets._protocols.SecondSummary` the browser draws, under
:class:`Filters`; :class:`~perfnb.widgets.aggregate.Aggregator` keeps the seconds.

>>> second = Second()
>>> cell = second.cells[("/api/x", "server", False, "")] = Cell()
>>> cell.durations.append(12.0)
>>> summarise(100, second, Filters(), frozenset({"server"}))["lat"]
{'/api/x': [12.0, 12.0, 12.0]}
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from perfnb.widgets._protocols import SecondSummary
from perfnb.widgets.instances import matches

__all__ = [
    "CLIENT_SOURCES",
    "HTTP_KINDS",
    "TIMEOUT_STATUSES",
    "Cell",
    "Filters",
    "Key",
    "Second",
    "is_error",
    "selected",
    "summarise",
]

#: Sources whose HTTP records are a client's view (they can split server/network).
CLIENT_SOURCES: Final = frozenset({"client", "load", "browser"})
#: Kinds that are HTTP exchanges with a latency worth a percentile.
HTTP_KINDS: Final = frozenset({"http"})
#: Statuses that count as errors besides 5xx: 0 means no response arrived.
NO_RESPONSE: Final = 0
#: Answers that say a deadline passed (gateway and request timeouts).
TIMEOUT_STATUSES: Final = frozenset({408, 504})
_MB: Final = 1024.0 * 1024.0

#: A cell's key: ``(route, source, load or not, instance)``.
Key = tuple[str, str, bool, str]


def is_error(status: int | None, error_type: str | None) -> bool:
    """Whether an HTTP record counts as an error: a 5xx, no response, or a raised error.

    4xx answers are the client's mistake, not the service failing, so they do not count.

    >>> is_error(503, None), is_error(404, None), is_error(200, "timeout")
    (True, False, True)
    """
    if error_type:
        return True
    if status is None:
        return False
    return status >= 500 or status == NO_RESPONSE


@dataclass(frozen=True, slots=True)
class Filters:
    """Which records the charts count.

    ``routes``/``sources`` empty mean "all" and "auto" (the server's own records
    when there are any, otherwise every source), so the same request seen by a
    client and by the server is not counted twice. ``instances`` empty means every
    instance; otherwise each entry is an instance or a host (all its processes),
    and ``""`` stands for records naming no instance (see :mod:`.instances`).
    """

    exclude_load: bool = True
    exclude_perfnb: bool = True
    routes: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    instances: frozenset[str] = frozenset()


class Cell:
    """Raw figures of one second for one (route, source, load?, instance) key."""

    __slots__ = (
        "durations",
        "errors",
        "net_sum",
        "poll_intervals",
        "polls",
        "split",
        "srv_sum",
        "timeouts",
    )

    def __init__(self) -> None:
        self.durations = array("f")
        self.errors = 0
        self.timeouts = 0
        self.srv_sum = 0.0
        self.net_sum = 0.0
        self.split = 0
        self.polls = 0
        self.poll_intervals = array("f")


@dataclass(slots=True)
class Second:
    cells: dict[Key, Cell] = field(default_factory=dict)
    perfnb_cells: dict[Key, Cell] = field(default_factory=dict)
    #: instance -> the last sample of each process metric in this second
    process: dict[str, dict[str, float]] = field(default_factory=dict)
    #: instance -> Web Vital -> values
    vitals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    records: int = 0

    def process_value(self, name: str, instances: frozenset[str]) -> float | None:
        """The process metric ``name`` of the chosen instances, the largest when several.

        Processes are sampled on their own requests, not all in every second: the
        largest sample shows a leak in any one of them, where a sum would jump with
        whichever processes happened to be sampled. One instance gives its own line.
        """
        values = [
            sample[name]
            for instance, sample in self.process.items()
            if name in sample and matches(instance, instances)
        ]
        return max(values) if values else None

    def vitals_of(self, instances: frozenset[str]) -> dict[str, list[float]]:
        """Web Vital -> values of the chosen instances."""
        out: dict[str, list[float]] = {}
        for instance, vitals in self.vitals.items():
            if matches(instance, instances):
                for name, values in vitals.items():
                    out.setdefault(name, []).extend(values)
        return out


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _p75(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.75 * len(ordered)) - 1)]


def _r(value: float) -> float:
    # three significant decimals keep the messages small without changing a chart
    return round(float(value), 3)


def selected(
    bucket: Second, filters: Filters, sources: frozenset[str]
) -> Iterable[tuple[Key, Cell]]:
    """The cells of ``bucket`` the charts count under ``filters`` and ``sources``."""
    f = filters
    groups = [bucket.cells.items()]
    if not f.exclude_perfnb:
        groups.append(bucket.perfnb_cells.items())
    for items in groups:
        for key, cell in items:
            route, source, is_load, instance = key
            if f.exclude_load and is_load:
                continue
            if f.routes and route not in f.routes:
                continue
            if f.instances and not matches(instance, f.instances):
                continue
            if source not in sources and not (source == "perfnb" and not f.exclude_perfnb):
                continue
            yield key, cell


def _split_cells(bucket: Second, filters: Filters) -> Iterable[Cell]:
    f = filters
    for (route, source, is_load, instance), cell in bucket.cells.items():
        if source not in CLIENT_SOURCES or not cell.split:
            continue
        if f.exclude_load and is_load:
            continue
        if f.routes and route not in f.routes:
            continue
        if f.instances and not matches(instance, f.instances):
            continue
        yield cell


def summarise(
    second: int, bucket: Second, filters: Filters, sources: frozenset[str]
) -> SecondSummary:
    """The summary of one second under ``filters`` (``sources``: resolved, not "auto")."""
    by_route: dict[str, list[array[float]]] = {}
    errors = 0
    polls = 0
    intervals: list[float] = []
    for (route, _source, _load, _instance), cell in selected(bucket, filters, sources):
        by_route.setdefault(route, []).append(cell.durations)
        errors += cell.errors
        polls += cell.polls
        intervals.extend(cell.poll_intervals)
    out: SecondSummary = {"t": second, "n": 0, "err": errors}
    lat: dict[str, list[float]] = {}
    rps: dict[str, int] = {}
    total = 0
    for route, parts in by_route.items():
        values = (
            np.frombuffer(parts[0], dtype=np.float32)
            if len(parts) == 1
            else np.concatenate([np.frombuffer(p, dtype=np.float32) for p in parts])
        )
        if not len(values):
            continue
        p50, p95, p99 = np.percentile(values, (50, 95, 99))
        lat[route] = [_r(p50), _r(p95), _r(p99)]
        rps[route] = len(values)
        total += len(values)
    out["n"] = total
    if lat:
        out["lat"] = lat
        out["rps"] = rps
    split = list(_split_cells(bucket, filters))
    count = sum(c.split for c in split)
    if count:
        out["srv"] = _r(sum(c.srv_sum for c in split) / count)
        out["net"] = _r(sum(c.net_sum for c in split) / count)
    rss = bucket.process_value("rss_bytes", filters.instances)
    if rss is not None:
        out["rss"] = _r(rss / _MB)
    cpu = bucket.process_value("cpu_percent", filters.instances)
    if cpu is not None:
        out["cpu"] = _r(cpu)
    vitals = bucket.vitals_of(filters.instances)
    if vitals:
        out["vit"] = {name: _r(_p75(v)) for name, v in vitals.items()}
    if polls:
        out["polls"] = polls
        if intervals:
            out["poll"] = _r(_median(intervals))
    return out
