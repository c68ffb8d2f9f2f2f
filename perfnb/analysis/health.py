"""The health engine: records in, health transitions and alerts out, incrementally.

:class:`HealthEngine` reads records as they stream in (or replays stored ones)
and keeps perfnb's health in the requirements' terms, each state with the
reason for it:

=====================  ===============================  ===========================================
state                  values                           rule (per window; thresholds in
                                                        :class:`~perfnb.analysis.healthconfig.HealthConfig`)
=====================  ===============================  ===========================================
``apiPolling``         healthy / degraded / failing     polls on the polling routes: failing when
                                                        ``poll_failing_errors`` of them fail;
                                                        degraded when ``poll_degraded_errors``
                                                        fail, a client runs away, or the median
                                                        interval exceeds ``poll_max_s ×
                                                        poll_slow_ratio``
``serverResponse``     good / slow / timeout            all requests: timeout when
                                                        ``timeout_share`` of them time out; slow
                                                        when their p95 reaches ``slow_ms``
``clientPerformance``  optimal / degraded / poor        over ``vitals_window_s``: Web Vitals at
                                                        p75 against ``vitals`` (good / poor), and
                                                        long frames per minute against
                                                        ``long_frames_degraded`` / ``_poor``
=====================  ===============================  ===========================================

and raises alerts (each raised, then cleared):

- ``runaway``: one client polls far too often (:mod:`perfnb.analysis.runaway`);
- ``degradation``: a route's p95 reaches ``degrade_ratio ×`` its rolling baseline
  (the median p95 of its last ``baseline_windows`` healthy windows) and at least
  ``degrade_min_ms`` above it;
- ``error_rate``: a route's error share (5xx or an error) reaches
  ``error_rate_enter`` and its baseline plus ``error_rate_margin``;
- ``timeout``: ``timeout_min_count`` timeouts and ``timeout_share`` of a route's
  requests (status 504 or 408, an ``error_type`` naming a timeout, or a request
  lasting ``timeout_ms``);
- ``leak``: the memory floor of a server process (``rss_bytes``) or a browser
  page (``js_heap_bytes``) grows for good (:mod:`perfnb.analysis.leaks`).

Hysteresis everywhere: a state worsens (an alert is raised) after
``enter_windows`` consecutive bad windows and recovers (clears) after
``leave_windows`` good ones judged against thresholds ``recover_ratio`` lower
(:mod:`perfnb.analysis.hysteresis`). A window with fewer than ``min_requests``
requests (or no data for a state) changes nothing.

What is read: records of ``source`` server and client (``kind`` http), browser
vitals, render and process records, and server process samples; never perfnb's
own (``source="perfnb"``) and, unless ``include_load``, no load-run traffic. A
request seen by both the server and a client counts once: per route and window
the server's view is used when it has one, the client's otherwise, and timeouts
are the larger count of the two views (a client that gave up sees a timeout the
server may not). Windows are cut by the engine's clock when records *arrive*;
polling intervals use the records' own times.

Output records (``source="perfnb"``, valid for :func:`perfnb.schema.validate_record`):

- ``kind="health"``, ``name`` the state, ``value`` its level (0 best), ``unit``
  ``"state"``, ``tags`` ``{state, previous, reason}``;
- ``kind="alert"``, ``name`` the alert, ``route``, ``client`` (runaways, browser
  leaks), ``value``/``unit`` the observed figure, ``tags`` ``{state: raised |
  cleared, severity, reason, level, message}`` (``level``/``message`` are what the
  dashboard's alert list shows).

Cost: each record is classified and tallied in O(1) (polls: O(log n) in the
client's look-back); per-window work is bounded by ``max_routes``, a 512-sample
reservoir per route, ``max_clients`` and the vitals look-back.

>>> from datetime import datetime, timezone
>>> engine = HealthEngine(HealthConfig(window_s=1, min_requests=1), clock=lambda: 0.0)
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> out = engine.replay([{"time": t, "source": "server", "kind": "http",
...                       "route": "/a", "status": 200, "duration_ms": 900.0}])
>>> [(r["name"], r["tags"]["state"]) for r in out]
[('serverResponse', 'good')]
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.healthrecords import ALERTS, STATES, OpenAlerts, health_record, records_of
from perfnb.analysis.healthreplay import PieceReplay
from perfnb.analysis.healthstates import ClientWindow, Verdict, judge_polling, judge_server
from perfnb.analysis.hysteresis import Hysteresis
from perfnb.analysis.leaks import LeakDetector, LeakEvent
from perfnb.analysis.routehealth import RouteHealth, Tally, is_timeout
from perfnb.analysis.runaway import PollTracker, RunawayEvent
from perfnb.schema import Record

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ALERTS", "STATES", "HealthConfig", "HealthEngine", "HealthState", "records_of"]

_OTHER: Final = "(other)"
_ALL: Final = "*"
_MAX_LEAK_SERIES: Final = 1000


class HealthState(NamedTuple):
    """One health state now: its value, the reason, and since when (epoch s)."""

    state: str
    reason: str
    since: float


class HealthEngine:
    """Incremental health: :meth:`observe` records, get transitions and alerts back.

    Pure apart from ``clock`` (epoch seconds; :meth:`replay` uses the records'
    own times instead). Not thread-safe: one caller at a time (``watch`` locks).
    :attr:`stats` counts records read, ignored (perfnb's own, load traffic, kinds
    it does not judge) and invalid (dropped: they did not fit the schema), windows
    judged, alerts raised and state transitions.

    >>> engine = HealthEngine()
    >>> engine.observe([])
    []
    >>> engine.states["apiPolling"].state
    'unknown'
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        service: str | None = None,
    ) -> None:
        self.config = config or HealthConfig()
        self.service = service
        self._clock = clock
        self._rng = random.Random(0)  # reservoir draws: replays give the same answers
        self._window: int | None = None
        self._now = 0.0
        self._server: dict[str, Tally] = {}
        self._client: dict[str, Tally] = {}
        self._routes: dict[str, RouteHealth] = {}
        self._polling_routes: dict[str, bool] = {}
        self._polls = Tally(self._rng)
        self._client_polls = Tally(self._rng)
        self._poll_intervals: list[float] = []
        self._last_poll: dict[str, float] = {}
        self._tracker = PollTracker(self.config)
        self._leaks: dict[tuple[str, str, str], LeakDetector] = {}
        self._browsers = ClientWindow(self.config)
        enter, leave = self.config.enter_windows, self.config.leave_windows
        self._levels = {name: Hysteresis(enter=enter, leave=leave) for name in STATES}
        self._states = {name: HealthState("unknown", "no data yet", 0.0) for name in STATES}
        self._open = OpenAlerts(service=service)
        self._out: list[Record] = []
        self.stats = {
            "records": 0,
            "ignored": 0,
            "invalid": 0,
            "windows": 0,
            "alerts": 0,
            "transitions": 0,
        }

    # -- what callers see ---------------------------------------------------------------

    @property
    def states(self) -> dict[str, HealthState]:
        """The three health states now, with reasons."""
        return dict(self._states)

    @property
    def active_alerts(self) -> list[Record]:
        """Alerts raised and not cleared yet (their ``raised`` records)."""
        return self._open.records

    @property
    def baselines(self) -> dict[str, tuple[float, float, int]]:
        """Per route: the baseline p95 (ms), error share, and windows it rests on.

        >>> HealthEngine().baselines
        {}
        """
        return {
            route: baseline
            for route, state in self._routes.items()
            if (baseline := state.baseline) is not None
        }

    # -- feeding ------------------------------------------------------------------------

    def observe(self, records: Iterable[Mapping[str, Any]]) -> list[Record]:
        """Take a batch of records (oldest first); return new health and alert records.

        Windows that ended by the clock's ``now`` are judged first, so an empty batch
        (``observe([])``) is how a caller moves time on when nothing arrives.
        """
        now = self._clock()
        self._advance(now)
        for record in records:
            self._take_safely(record)
        return self._drain()

    def tick(self) -> list[Record]:
        """``observe([])``: judge the windows that ended."""
        return self.observe([])

    def replay(
        self, frame_or_records: pd.DataFrame | Iterable[Mapping[str, Any]], *, stretch: float = 1.0
    ) -> list[Record]:
        """Run stored records through the engine on a simulated clock; every output record.

        Records are sorted by time and the clock follows them; ``stretch`` multiplies
        the time since the first record (``stretch=10`` replays traffic recorded ten
        times faster than life at its real pace: intervals ×10, durations unchanged).
        The last window is judged at the end.

        >>> HealthEngine().replay([])
        []
        """
        return self.replay_pieces([frame_or_records], stretch=stretch)

    def replay_pieces(
        self,
        pieces: Iterable[pd.DataFrame | Iterable[Mapping[str, Any]]],
        *,
        stretch: float = 1.0,
    ) -> list[Record]:
        """:meth:`replay` of records that come in time-ordered pieces, one in memory at a time.

        Same output as replaying all the pieces' records at once; the last window is
        judged after the last piece (see :class:`~perfnb.analysis.healthreplay.PieceReplay`).

        >>> HealthEngine().replay_pieces(iter([[], []]))
        []
        """
        replay = PieceReplay(self, stretch=stretch)
        out: list[Record] = []
        for piece in pieces:
            out.extend(replay.feed(piece))
            del piece  # let the piece go before the next one is read
        out.extend(replay.finish())
        return out

    # -- records in -------------------------------------------------------------------

    def _take_safely(self, record: Mapping[str, Any]) -> None:
        try:
            self._take(record)
        except (AttributeError, KeyError, TypeError, ValueError):
            # A record that does not fit the schema (observe() takes plain dicts too) is
            # counted and dropped: bad input never stops the engine.
            self.stats["invalid"] += 1

    def _take(self, record: Mapping[str, Any]) -> None:
        self.stats["records"] += 1
        source = record.get("source")
        if source == "perfnb" or (record.get("run_id") and not self.config.include_load):
            self.stats["ignored"] += 1
            return
        kind = record.get("kind")
        if kind == "http" and source in ("server", "client"):
            self._request(record, source)
        elif kind == "process":
            self._memory(record, source)
        elif source == "browser" and kind == "vital":
            self._browsers.vital(self._now, record.get("name"), record.get("value"))
        elif source == "browser" and kind == "render":
            length = record.get("value") or record.get("duration_ms") or 0.0
            self._browsers.render(self._now, record.get("name"), length)
        else:
            self.stats["ignored"] += 1

    def _route_name(self, record: Mapping[str, Any]) -> str:
        route = record.get("route") or "<unmatched>"
        if route in self._routes or len(self._routes) < self.config.max_routes:
            return str(route)
        return _OTHER

    def _request(self, record: Mapping[str, Any], source: str) -> None:
        cfg = self.config
        route = self._route_name(record)
        if route not in self._routes:
            self._routes[route] = RouteHealth(cfg)
        status = record.get("status") or 0
        error_type = record.get("error_type")
        duration = record.get("duration_ms")
        error = status >= 500 or status == 0 or bool(error_type)
        timeout = is_timeout(status, error_type, duration, cfg.timeout_ms)
        views = self._server if source == "server" else self._client
        for key in (route, _ALL):
            tally = views.get(key)
            if tally is None:
                tally = views[key] = Tally(self._rng)
            tally.add(duration, error=error, timeout=timeout)
        polling = self._polling_routes.get(route)
        if polling is None:
            polling = any(fnmatchcase(route, p) for p in cfg.polling_routes)
            if len(self._polling_routes) < 10 * cfg.max_routes:
                self._polling_routes[route] = polling
        if polling:
            self._poll(record, route, source, error or timeout, duration)

    def _poll(
        self,
        record: Mapping[str, Any],
        route: str,
        source: str,
        failed: bool,
        duration: float | None,
    ) -> None:
        cfg = self.config
        polls = self._polls if source == "server" else self._client_polls
        polls.add(None, error=failed, timeout=False)
        key = self._client_key(record)
        if key is None:
            return
        key = key if source == "server" else f"{source}:{key}"  # two views never mix
        start = record["time"].timestamp()
        last = self._last_poll.get(key)
        if last is not None and start - last >= 0 and len(self._poll_intervals) < 10_000:
            self._poll_intervals.append(start - last)
        if last is None or start > last:
            self._last_poll[key] = start
        if len(self._last_poll) > cfg.max_clients:
            self._last_poll.pop(next(iter(self._last_poll)))
        event = self._tracker.poll(key, route, start, (duration or 0.0) / 1000.0)
        if event is not None:
            self._runaway(event)

    def _client_key(self, record: Mapping[str, Any]) -> str | None:
        key = self.config.client_key
        if key == "client":
            value = record.get("client")
        else:
            value = (record.get("tags") or {}).get(key[len("tag:") :])
        return str(value) if value else None

    def _memory(self, record: Mapping[str, Any], source: Any) -> None:
        name, value = record.get("name"), record.get("value")
        if name not in ("rss_bytes", "js_heap_bytes") or not isinstance(value, int | float):
            self.stats["ignored"] += 1
            return
        owner = str(record.get("client") or "") if source == "browser" else ""
        owner = owner or str(record.get("service") or "")
        series = (str(source), owner, str(name))
        detector = self._leaks.get(series)
        if detector is None:
            if len(self._leaks) >= _MAX_LEAK_SERIES:
                return  # bounded: a flood of pages cannot grow the engine
            detector = self._leaks[series] = LeakDetector(self.config)
        event = detector.add(record["time"].timestamp(), float(value))
        if event is not None:
            self._leak(series, event)

    # -- windows ----------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)
        index = math.floor(self._now / self.config.window_s)
        if self._window is None:
            self._window = index
            return
        if index <= self._window:
            return
        # Only the window with data is judged: empty windows in between change nothing.
        self._window = index
        self._judge_window()

    def _judge_window(self) -> None:
        cfg = self.config
        self.stats["windows"] += 1
        for event in self._tracker.sweep(self._now):
            self._runaway(event)
        for route, state in self._routes.items():
            self._judge_route(route, state)
        self._judge_polling()
        self._judge_server()
        self._judge_client()
        self._server, self._client = {}, {}
        self._polls, self._client_polls = Tally(self._rng), Tally(self._rng)
        self._poll_intervals = []
        # Routes that went quiet keep their baseline until the cap needs room.
        if len(self._routes) >= cfg.max_routes:
            keep = {r for r, s in self._routes.items() if s.alerting}
            for route in list(self._routes):
                if route not in keep and len(self._routes) > cfg.max_routes // 2:
                    del self._routes[route]

    def _view(self, route: str) -> tuple[Tally | None, int, int]:
        server, client = self._server.get(route), self._client.get(route)
        primary = server if server is not None and server.requests else client
        requests = max(server.requests if server else 0, client.requests if client else 0)
        timeouts = max(server.timeouts if server else 0, client.timeouts if client else 0)
        return primary, requests, timeouts

    def _judge_route(self, route: str, state: RouteHealth) -> None:
        primary, requests, timeouts = self._view(route)
        if primary is None or requests < self.config.min_requests:
            return
        for change in state.judge(primary, requests=requests, timeouts=timeouts):
            key = (change.name, route, "")
            if change.raised:
                self._raise(key, change.value, change.reason, route=route)
            else:
                self._clear(key, change.value, change.reason)

    def _judge_polling(self) -> None:
        # The server's view of polls wins; a client-only setup counts its own.
        polls = self._polls if self._polls.requests else self._client_polls
        verdict = judge_polling(self.config, polls, self._tracker.runaways, self._poll_intervals)
        self._verdict("apiPolling", verdict)

    def _judge_server(self) -> None:
        primary, requests, timeouts = self._view(_ALL)
        verdict = judge_server(self.config, primary, requests=requests, timeouts=timeouts)
        self._verdict("serverResponse", verdict)

    def _judge_client(self) -> None:
        self._verdict("clientPerformance", self._browsers.judge(self._now))

    def _verdict(self, name: str, verdict: Verdict | None) -> None:
        if verdict is not None:  # nothing to judge: the state stays as it was
            self._state(name, verdict.up, verdict.down, verdict.reason)

    def _state(self, name: str, up: int, down: int, reason: str) -> None:
        level = self._levels[name]
        before = self._states[name]
        changed = level.update(up, down)
        now_state = STATES[name][level.level]
        if before.state == "unknown" or changed:
            self._states[name] = HealthState(now_state, reason, self._now)
            self._out.append(
                health_record(
                    now=self._now,
                    name=name,
                    state=now_state,
                    previous=before.state,
                    reason=reason,
                    service=self.service,
                )
            )
            self.stats["transitions"] += 1
        else:  # same state: keep its reason current
            self._states[name] = HealthState(now_state, reason, before.since)

    # -- records out ------------------------------------------------------------------

    def _raise(
        self,
        key: tuple[str, str, str],
        value: float,
        reason: str,
        *,
        route: str | None = None,
        client: str | None = None,
    ) -> None:
        record = self._open.raise_(key, self._now, value, reason, route=route, client=client)
        if record is not None:
            self.stats["alerts"] += 1
            self._out.append(record)

    def _clear(self, key: tuple[str, str, str], value: float, reason: str) -> None:
        record = self._open.clear(key, self._now, value, reason)
        if record is not None:
            self._out.append(record)

    def _runaway(self, event: RunawayEvent) -> None:
        key = ("runaway", "", event.client)
        value = event.interval_s if event.interval_s is not None else math.nan
        if event.state == "raised":
            self._raise(key, value, event.reason, route=event.route, client=event.client)
        else:
            self._clear(key, value, event.reason)

    def _leak(self, series: tuple[str, str, str], event: LeakEvent) -> None:
        source, owner, name = series
        key = ("leak", "", f"{source}:{owner}:{name}")
        reason = f"{'browser JS heap' if source == 'browser' else 'server RSS'}: {event.reason}"
        if event.state == "raised":
            client = owner if source == "browser" else None
            self._raise(key, event.bytes_per_s, reason, client=client)
        else:
            self._clear(key, event.bytes_per_s, reason)

    def _drain(self) -> list[Record]:
        out, self._out = self._out, []
        return out
