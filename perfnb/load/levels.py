"""Levels of load from a run's records: the input of the bottleneck analysis.

:class:`LevelRecorder` is a sink (pass it as a load run's ``sink``) that keeps, per
second and route, what :func:`~perfnb.load.bottleneck.find_bottleneck` needs: from
the engine's records (``source="load"``) the per-second requests, errors and p95,
and the Server-Timing split (from its per-second ``server_timing`` and
``queue_ms`` records, or from its per-request records); from the app's own
records of the run (``source="server"``, same ``run_id``, e.g. through the feed)
the server side of the split. :meth:`LevelRecorder.levels` then cuts the run into
levels of offered load: with the run's shape, what the shape asked each second
(users or rate); without it, the requests sent in that second.

>>> rec = LevelRecorder(run_id="r1")
>>> rec.bottleneck().describe()
'bottleneck: none — no level had enough requests to judge'
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from perfnb.load.bottleneck import Bottleneck, Level, RouteFigures, Thresholds, find_bottleneck
from perfnb.load.bottleneck import split_parts as _parts
from perfnb.load.shapes import Shape
from perfnb.schema import Record, Sink

__all__ = ["LevelRecorder"]

#: Levels are binned onto a grid of at most this many steps of the highest level.
_GRID_STEPS: Final = 20
#: The growing part of a run ends where the load first falls below this share of its peak.
_DESCENT: Final = 0.8
#: A change of the load within one second larger than this share of the peak is a step.
_STEP: Final = 0.25
#: At most this many seconds are kept per run (a day): a sink must stay bounded.
_MAX_SECONDS: Final = 86_400


def _clean(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A record as a plain dict: nulls (None, NaN: a frame's missing values) left out,
    ``tags`` as a dict (a Parquet map reads back as a list of pairs)."""
    out = {k: v for k, v in record.items() if v is not None and v == v}  # NaN != NaN
    tags = out.get("tags")
    if tags is not None and not isinstance(tags, Mapping):
        out["tags"] = dict(tags)
    return out


class _Second:
    """What one route did in one second (from per-second and per-request records)."""

    __slots__ = (
        "agg_app", "agg_client", "agg_db", "agg_n", "agg_queue", "agg_queue_n", "agg_server",
        "app", "corr", "corr_n", "db", "errors", "n", "p95", "p95c", "requests",
        "server", "srv_app", "srv_db", "srv_n", "srv_total", "timed_app", "timed_total", "total",
    )  # fmt: skip

    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.p95: float | None = None
        self.p95c: float | None = None
        # the engine's per-request records: client total, Server-Timing parts
        self.n = self.timed_app = 0
        self.total = self.timed_total = self.server = self.app = self.db = 0.0
        self.corr = 0.0
        self.corr_n = 0
        # the engine's per-second aggregates: sums over every timed response of the second
        self.agg_n = self.agg_queue_n = 0
        self.agg_client = self.agg_server = self.agg_app = self.agg_db = self.agg_queue = 0.0
        # the app's own records of the same run
        self.srv_n = 0
        self.srv_total = self.srv_app = self.srv_db = 0.0


def _weighted_median(pairs: list[tuple[float, int]]) -> float:
    pairs = sorted(pairs)
    half = sum(w for _, w in pairs) / 2
    run = 0
    for value, weight in pairs:
        run += weight
        if run >= half:
            return value
    return pairs[-1][0] if pairs else 0.0


class LevelRecorder:
    """A sink keeping what the bottleneck analysis needs from one load run's records.

    Pass it as the run's ``sink`` (it forwards every record to ``sink``), and feed
    it the app's server records of the run too when you have them; then ask
    :meth:`bottleneck`. Only records of ``run_id`` count (the first run id seen
    when not given). Thread-safe: the run and a feed may call it at once.

    The engine keeps per-request records only while a worker sends at most its
    ``detail_rate`` (200/s by default); above it the time split comes from its
    per-second ``server_timing`` records (the means of the responses'
    Server-Timing), or from the app's own records when its responses carry none.

    >>> rec = LevelRecorder(run_id="r1")
    >>> feed = perfnb.connect(url, sink=rec)                          # doctest: +SKIP
    >>> result = run_load(url, scenario, shape, run_id="r1", sink=rec)  # doctest: +SKIP
    >>> print(rec.bottleneck(shape=shape).describe())                 # doctest: +SKIP
    """

    def __init__(self, *, run_id: str | None = None, sink: Sink | None = None) -> None:
        self.run_id = run_id
        self.sink = sink
        self.ignored = 0
        self._seconds: dict[int, dict[str, _Second]] = {}
        self._first_us: int | None = None
        # the run's sink and a feed of the app's records may call in from two threads
        self._lock = threading.Lock()

    def __call__(self, record: Record) -> None:
        """Keep what matters of ``record``; never raises (a load run must not stop for it)."""
        self.extend((record,))
        if self.sink is not None:
            self.sink(record)

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Take many records: the app's server records of the run, or a frame's rows.

        >>> rows = store.read(run_ids=["r1"], include_load=True)          # doctest: +SKIP
        >>> LevelRecorder(run_id="r1").extend(rows.to_dict("records"))   # doctest: +SKIP
        """
        with self._lock:
            for record in records:
                try:
                    self._take(record)
                except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
                    self.ignored += 1

    def _take(self, record: Mapping[str, Any]) -> None:
        r = _clean(record)
        run = r.get("run_id")
        if not run:
            return
        if self.run_id is None:
            if r.get("source") != "load":
                return
            self.run_id = run
        elif run != self.run_id:
            return
        source, kind = r.get("source"), r.get("kind")
        when = r["time"].timestamp()
        sec = int(when)
        if source == "load" and kind == "load":
            name = r.get("name")
            if name in ("requests", "errors", "p95_ms", "corrected_p95_ms"):
                cell = self._cell(sec, r)
                if cell is None:
                    return
                value = float(r["value"])
                if name == "requests":
                    cell.requests += int(value)
                    if self._first_us is None or sec * 1_000_000 < self._first_us:
                        self._first_us = sec * 1_000_000
                elif name == "errors":
                    cell.errors += int(value)
                elif name == "p95_ms":
                    cell.p95 = value
                else:
                    cell.p95c = value
            elif name in ("server_timing", "queue_ms"):
                cell = self._cell(sec, r)
                if cell is not None:
                    self._aggregate(cell, name, float(r["value"]), r.get("tags") or {})
        elif kind == "http" and source in ("load", "server"):
            cell = self._cell(sec, r)
            if cell is None:
                return
            if source == "load":
                self._client(cell, r, when)
            else:
                self._server(cell, r)

    def _cell(self, sec: int, r: Mapping[str, Any]) -> _Second | None:
        routes = self._seconds.get(sec)
        if routes is None:
            if len(self._seconds) >= _MAX_SECONDS:
                self.ignored += 1
                return None
            routes = self._seconds[sec] = {}
        key = f"{r.get('method') or ''} {r.get('route') or ''}".strip()
        cell = routes.get(key)
        if cell is None:
            cell = routes[key] = _Second()
        return cell

    def _client(self, cell: _Second, r: Mapping[str, Any], when: float) -> None:
        total = float(r["duration_ms"])
        us = int(when * 1e6)
        if self._first_us is None or us < self._first_us:
            self._first_us = us
        cell.n += 1
        cell.total += total
        app = r.get("app_ms")
        if app is not None:
            cell.timed_app += 1
            cell.timed_total += total
            cell.app += float(app)
            cell.db += float(r.get("db_ms") or 0.0)
            cell.server += float(r.get("server_ms") or app)
        corrected = (r.get("tags") or {}).get("corrected_ms")
        if corrected is not None:
            cell.corr += float(corrected) - total
            cell.corr_n += 1

    @staticmethod
    def _aggregate(cell: _Second, name: str, value: float, tags: Mapping[str, str]) -> None:
        # means with their counts, kept as sums: a second flushed in two parts adds up
        if name == "server_timing":
            n = int(value)
            parts = [float(tags[k]) * n for k in ("client_ms", "server_ms", "app_ms", "db_ms")]
            cell.agg_n += n
            cell.agg_client += parts[0]
            cell.agg_server += parts[1]
            cell.agg_app += parts[2]
            cell.agg_db += parts[3]
        else:
            n = int(tags["requests"])
            cell.agg_queue += value * n
            cell.agg_queue_n += n

    @staticmethod
    def _server(cell: _Second, r: Mapping[str, Any]) -> None:
        server = r.get("server_ms")
        server = float(server if server is not None else r["duration_ms"])
        app = r.get("app_ms")
        app = float(app if app is not None else (r.get("ttfb_ms") or server))
        cell.srv_n += 1
        cell.srv_total += server
        cell.srv_app += app
        cell.srv_db += float(r.get("db_ms") or 0.0)

    # -- levels ---------------------------------------------------------------------
    def levels(self, *, shape: Shape | None = None) -> tuple[list[Level], str]:
        """The run cut into levels of offered load, and the unit of the level.

        With ``shape`` (the run's), a second's level is what the shape asked then
        (users or rate); without it, the requests sent in that second. Only the
        growing part of the run counts (up to where the load first falls back),
        and seconds holding a step of the load are left out.
        """
        with self._lock:
            return self._levels(shape)

    def _levels(self, shape: Shape | None) -> tuple[list[Level], str]:
        seconds = sorted(self._seconds)
        if len(seconds) > 2:
            seconds = seconds[1:-1]  # the first and last seconds are partial
        unit = "req/s"
        level_of: dict[int, float] = {}
        edges: dict[int, tuple[float, float]] = {}
        if shape is not None and self._first_us is not None:
            unit = "users" if shape.model == "closed" else "req/s"
            t0 = self._first_us / 1e6 - _first_active(shape)
            for sec in seconds:
                mid, start, end = (shape.tick(sec + d - t0) for d in (0.5, 0.0, 0.999))
                if mid is None or start is None or end is None:
                    continue
                level_of[sec] = mid
                edges[sec] = (start, end)
        else:
            for sec in seconds:
                level_of[sec] = float(sum(c.requests for c in self._seconds[sec].values()))
        peak = 0.0
        growing: list[int] = []
        for sec in sorted(level_of):
            if level_of[sec] < _DESCENT * peak:
                break
            peak = max(peak, level_of[sec])
            growing.append(sec)
        if not growing or peak <= 0:
            return [], unit
        grid = peak / _GRID_STEPS
        if unit == "users":
            grid = max(1.0, math.ceil(grid))

        def bin_of(value: float) -> float:
            return round(round(value / grid) * grid, 6)

        groups: dict[float, list[int]] = {}
        for sec in growing:
            # a step inside this second: with the run's start known to about a second,
            # its requests may belong to either side
            if sec in edges and abs(edges[sec][1] - edges[sec][0]) > _STEP * peak:
                continue
            value = bin_of(level_of[sec])
            if value > 0:
                groups.setdefault(value, []).append(sec)
        # a level is named by the load it actually held (the median of its seconds), not
        # by the grid point it was binned to
        out = [
            Level(_round3(_median([level_of[s] for s in secs])), self._figures(secs))
            for _, secs in sorted(groups.items())
        ]
        return out, unit

    def _figures(self, secs: list[int]) -> dict[str, RouteFigures]:
        out: dict[str, RouteFigures] = {}
        names = {name for s in secs for name in self._seconds[s]}
        for name in names:
            cells = [self._seconds[s][name] for s in secs if name in self._seconds[s]]
            requests = sum(c.requests for c in cells)
            if requests == 0:
                continue
            p95s = [
                (c.p95c if c.p95c is not None else c.p95, c.requests)
                for c in cells
                if c.requests and (c.p95 is not None or c.p95c is not None)
            ]
            out[name] = RouteFigures(
                requests=requests,
                errors=sum(c.errors for c in cells),
                # a typical second's p95: the request-weighted median over the level
                p95_ms=_weighted_median([(float(v), w) for v, w in p95s if v is not None]),
                parts=_cells_parts(cells),
            )
        return out

    def bottleneck(
        self, *, shape: Shape | None = None, thresholds: Thresholds | None = None
    ) -> Bottleneck:
        """The first route to degrade in the run recorded so far (see the module's rules)."""
        levels, unit = self.levels(shape=shape)
        return find_bottleneck(levels, unit=unit, thresholds=thresholds)


def _cells_parts(cells: list[_Second]) -> dict[str, float]:
    n = sum(c.n for c in cells)
    srv_n = sum(c.srv_n for c in cells)
    total = sum(c.total for c in cells) / n if n else 0.0
    # Per second, the engine's aggregate covers every response that carried Server-Timing;
    # its per-request records only those kept while the rate was low. Both describe the
    # same requests, so a second counts one of them: the aggregate when there is one.
    timed = 0
    t_total = t_server = t_app = t_db = 0.0
    queue_n = 0
    queue_sum = 0.0
    for c in cells:
        if c.agg_n:
            timed += c.agg_n
            t_total, t_server = t_total + c.agg_client, t_server + c.agg_server
            t_app, t_db = t_app + c.agg_app, t_db + c.agg_db
        elif c.timed_app:
            timed += c.timed_app
            t_total, t_server = t_total + c.timed_total, t_server + c.server
            t_app, t_db = t_app + c.app, t_db + c.db
        if c.agg_queue_n:
            queue_n, queue_sum = queue_n + c.agg_queue_n, queue_sum + c.agg_queue
        elif c.corr_n:
            queue_n, queue_sum = queue_n + c.corr_n, queue_sum + c.corr
    queue = queue_sum / queue_n if queue_n else None
    if timed:
        # the engine parsed Server-Timing on these responses: the same requests, both views
        return _parts(
            total=t_total / timed,
            server=t_server / timed,
            app=t_app / timed,
            db=t_db / timed,
            queue=queue,
        )
    if srv_n:
        # the app's own records: the server side is exact, the network part needs client means
        return _parts(
            total=total,
            server=sum(c.srv_total for c in cells) / srv_n,
            app=sum(c.srv_app for c in cells) / srv_n,
            db=sum(c.srv_db for c in cells) / srv_n,
            queue=queue,
        )
    return {} if queue is None else {"queueing": max(0.0, queue)}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _round3(value: float) -> float:
    """``value`` to three significant digits (levels read as 20, 62.5, 240)."""
    if value <= 0:
        return 0.0
    return round(value, max(0, 2 - math.floor(math.log10(value))))


def _first_active(shape: Shape) -> float:
    """Seconds into the run before the shape first asks for any load (a ramp from zero)."""
    floor = 1.0 if shape.model == "closed" else 1e-9
    elapsed = 0.0
    while elapsed < 3600.0:
        wanted = shape.tick(elapsed)
        if wanted is None or wanted >= floor:
            return elapsed
        elapsed += 0.05
    return 0.0
