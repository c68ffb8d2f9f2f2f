"""The live dashboard: every chart in one widget, fed by a stream's subscription.

>>> from perfnb.stream import Stream                    # doctest: +SKIP
>>> stream = Stream()                                   # doctest: +SKIP
>>> dash = Dashboard(stream, window=300)                # doctest: +SKIP
>>> dash                                                # doctest: +SKIP
>>> dash.freeze()        # static Plotly HTML + PNG    # doctest: +SKIP

How it stays light: records are bucketed per second in the kernel
(:class:`~perfnb.widgets.aggregate.Aggregator`); the stream calls the dashboard
back with a batch at most every ``every`` seconds (0.5 by default) and each batch
becomes one message holding only the seconds that changed. Nothing polls the
app: the records come from whatever feeds the stream (the feed client, a load
run, a store replay). plotly.js (the ~1 MB basic bundle) is loaded once per page.

The health lights and the alert list come from perfnb's health engine
(:class:`~perfnb.analysis.health.HealthEngine`, thresholds in ``health=``), the
same states, thresholds and reasons as the :class:`~perfnb.widgets.healthboard.HealthBoard`.
The engine is fed on the stream's thread, beside the aggregation (about 5 µs a
record); the kernel thread only reads its states.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import traitlets

from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError
from perfnb.schema import SOURCES, Record
from perfnb.widgets import _protocols as p
from perfnb.widgets._base import ChartWidget, LazyEsm
from perfnb.widgets.aggregate import Aggregator, Filters
from perfnb.widgets.charts import dashboard_figures
from perfnb.widgets.instances import by_host, keep_records, keep_rows
from perfnb.widgets.lights import AlertLog
from perfnb.widgets.livehealth import LiveHealth
from perfnb.widgets.readouts import Readouts

if TYPE_CHECKING:
    import pandas as pd

    from perfnb.widgets.freeze import Frozen

__all__ = ["Dashboard", "StreamLike"]

MIN_WINDOW: Final = 10


class _Subscription(Protocol):
    def close(self) -> None: ...


class StreamLike(Protocol):
    """What the dashboard needs of a :class:`perfnb.stream.Stream`."""

    def subscribe(
        self, callback: Callable[[list[Record]], None], *, every: float = ..., max_batch: int = ...
    ) -> _Subscription: ...

    def frame(self, window: float | timedelta | None = None) -> pd.DataFrame: ...


def _check_window(window: int, max_window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int):
        raise ConfigError(f"window: got {window!r}; expected whole seconds (an int)")
    if not MIN_WINDOW <= window <= max_window:
        raise ConfigError(
            f"window: got {window}; expected {MIN_WINDOW} to {max_window} seconds (max_window)"
        )
    return window


def _check_sources(sources: Iterable[str]) -> list[str]:
    out = list(sources)
    unknown = sorted(set(out) - SOURCES)
    if unknown:
        raise ConfigError(f"sources: got {unknown}; expected some of {sorted(SOURCES)}")
    return out


def _check_instances(instances: Iterable[str]) -> list[str]:
    out = list(instances)
    wrong = [i for i in out if not isinstance(i, str)]
    if wrong:
        raise ConfigError(f"instances: got {wrong!r}; expected instance names or host names (str)")
    return out


class Dashboard(ChartWidget):
    """Live charts of a :class:`~perfnb.stream.Stream`, with health lights and alerts.

    Charts: latency p50/p95/p99 per route, throughput, error rate, server vs
    network time, process memory and CPU, Web Vitals, polling cadence. Controls
    (in the widget and as traits): ``exclude_load`` (records with a ``run_id``),
    ``exclude_perfnb`` (perfnb's own endpoints and overhead), ``routes`` and
    ``sources`` (empty: all routes; auto sources, i.e. the server's own records
    when there are any), ``instances``, ``paused``, ``window`` (seconds shown).

    ``instances`` narrows everything to some app processes: each entry is a whole
    instance (``tags["instance"]``, ``"<host>-<pid>-<boot>"``, set by a server with
    a fleet directory) or a host (every process of that host); empty means all.
    Records naming no instance (a single-process app, the notebook's own client
    and load-run records) count as instance ``""``: with a filter set they are
    shown only when ``""`` is one of the entries, because a view narrowed to one
    worker should hold only what that worker did; add ``""`` to see them beside it.
    (Browser records that came through a fleet's feed name the process that took
    the beacon, and follow the filter like that process's own records.)
    The charts, the health lights and the overhead readout follow the filter; the
    load run's bottleneck readout and ``alert`` records from the stream stay
    whole-app. Each update lists the instances seen, by host, for the picker.

    Lights and alerts: the health engine's states (``apiPolling``,
    ``serverResponse``, ``clientPerformance``), its alerts (runaway, degradation,
    error_rate, timeout, leak) and ``alert`` records arriving in the stream.
    ``health`` sets its thresholds (:class:`~perfnb.analysis.healthconfig.HealthConfig`);
    ``exclude_load`` decides whether it judges load traffic too. A state reads
    ``unknown`` until the engine's first window (``health.window_s``, 10 s) ends.

    >>> dash = Dashboard(stream, window=120, exclude_load=False)  # doctest: +SKIP
    >>> dash.routes = ["/api/poll"]                               # doctest: +SKIP
    >>> dash.instances = ["web_1"]      # every process of host web_1  # doctest: +SKIP
    """

    _esm = LazyEsm("dashboard")

    window = traitlets.Int(300).tag(sync=True)
    max_window = traitlets.Int(900).tag(sync=True)
    exclude_load = traitlets.Bool(True).tag(sync=True)
    exclude_perfnb = traitlets.Bool(True).tag(sync=True)
    routes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sources = traitlets.List(traitlets.Unicode()).tag(sync=True)
    instances = traitlets.List(traitlets.Unicode()).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)
    max_routes = traitlets.Int(6).tag(sync=True)
    #: One-line readouts: ``overhead`` (perfnb's share of server time, last minute) and
    #: ``bottleneck`` (the last load run's first route to degrade); see :mod:`.readouts`.
    readouts = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        stream: StreamLike,
        *,
        window: int = 300,
        max_window: int = 900,
        exclude_load: bool = True,
        exclude_perfnb: bool = True,
        routes: Sequence[str] = (),
        sources: Sequence[str] = (),
        instances: Sequence[str] = (),
        paused: bool = False,
        title: str = "perfnb · live",
        every: float = 0.5,
        max_routes: int = 6,
        health: HealthConfig | None = None,
        polling_routes: Callable[[str], bool] | None = None,
        history: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.5 <= every <= 60:
            raise ConfigError(
                f"every: got {every!r}; expected 0.5 to 60 seconds (at most two updates a second)"
            )
        if max_window < MIN_WINDOW or max_window > 24 * 3600:
            raise ConfigError(f"max_window: got {max_window!r}; expected 10 s to 1 day")
        _check_window(window, max_window)
        super().__init__(
            title=title,
            window=window,
            max_window=max_window,
            exclude_load=exclude_load,
            exclude_perfnb=exclude_perfnb,
            routes=list(routes),
            sources=_check_sources(sources),
            instances=_check_instances(instances),
            paused=paused,
            max_routes=max_routes,
        )
        self._clock = clock
        self.aggregator = Aggregator(
            max_window=max_window,
            polling_routes=polling_routes,
            filters=Filters(
                exclude_load=exclude_load,
                exclude_perfnb=exclude_perfnb,
                routes=frozenset(routes),
                sources=frozenset(sources),
                instances=frozenset(instances),
            ),
            clock=clock,
        )
        self.alerts = AlertLog(clock=clock)
        config = (health or HealthConfig()).replace(include_load=not exclude_load)
        #: The health engine behind the lights and the alert list (see :mod:`.livehealth`).
        self.live_health = LiveHealth(
            config,
            alerts=self.alerts,
            clock=clock,
            tick=min(1.0, config.window_s / 2),
            on_change=self._on_health_tick,
        )
        self.readout_state = Readouts(clock=clock)
        self.readouts = self.readout_state.text()
        self.health: dict[str, p.HealthLight] = {}
        #: The last message sent to the browser, and how many were sent.
        self.last_update: p.UpdateMsg | None = None
        self.updates_sent = 0
        self.callback_errors = 0
        self.readout_errors = 0
        self._send_lock = threading.Lock()
        self._stream = stream
        if history:
            past = stream.frame(window=max_window)
            self.aggregator.add_frame(past)
            self.live_health.replay(keep_rows(past, self.aggregator.filters.instances))
        self._every = every
        self._last_push = 0.0
        # big batches: a burst must not turn into more than two messages a second
        self._subscription: _Subscription | None = stream.subscribe(
            self._on_records, every=every, max_batch=200_000
        )
        self.observe(
            self._on_filters,
            names=["exclude_load", "exclude_perfnb", "routes", "sources", "instances"],
        )
        self.observe(self._on_window, names=["window"])
        self.observe(self._on_paused, names=["paused"])

    # -- data in ----------------------------------------------------------------------
    def _on_records(self, records: list[Record]) -> None:
        try:
            self.aggregator.add_records(records)
            # the engine runs here, on the stream's thread: the kernel only reads its lights
            self.live_health.observe(keep_records(records, self.aggregator.filters.instances))
            for rec in records:
                if rec.get("kind") == "alert":
                    self.live_health.add_alert_record(rec)
            self._update_readouts(records)
            # deliveries come every `every` s; a full batch can come sooner, and then
            # its seconds wait (dirty) for the next delivery
            if not self.paused and time.monotonic() - self._last_push >= 0.9 * self._every:
                self.push_update(reset=False)
        except Exception:
            # the stream's thread must survive a bad batch; the count says it happened
            self.callback_errors += 1

    def _on_health_tick(self) -> None:
        # a window judged while no records came: the lights changed, send them
        if not self.paused and getattr(self, "_subscription", None) is not None:
            self.push_update(reset=False)

    def _update_readouts(self, records: list[Record], *, overhead_now: bool = False) -> None:
        try:
            state = self.readout_state
            if state.take(records) and state.bottleneck is not None and state.bottleneck.found:
                run = state.bottleneck_run
                self.alerts.add("info", "load", f"load run {run}: {state.bottleneck.describe()}")
            if overhead_now or state.overhead_due():
                chosen = self.aggregator.filters.instances
                state.update_overhead(keep_rows(self._stream.frame(window=60), chosen))
            text = state.text()
            if text != self.readouts:
                self.readouts = text
        except Exception:
            # the readouts are extras: the charts go on without them, and the count says so
            self.readout_errors += 1

    # -- controls ------------------------------------------------------------------------
    def _on_filters(self, change: Mapping[str, Any]) -> None:
        name, new = change["name"], change["new"]
        if name == "sources":
            _check_sources(new)
        if name == "instances":
            _check_instances(new)
        filters = self.aggregator.set_filters(**{name: new})
        if name in ("exclude_load", "instances"):
            # the engine judges load traffic or not, and which processes, from the
            # start: replay the history the stream keeps
            past = keep_rows(self._stream.frame(window=self.max_window), filters.instances)
            self.live_health.replay(past, include_load=not filters.exclude_load)
        if name == "instances":
            # the overhead readout is worked out again, for these processes, at once
            self._update_readouts([], overhead_now=True)
        self.push_update(reset=True)

    def _on_window(self, change: Mapping[str, Any]) -> None:
        _check_window(change["new"], self.max_window)
        self.push_update(reset=True)

    def _on_paused(self, change: Mapping[str, Any]) -> None:
        self.push_update(reset=bool(not change["new"]))

    def _on_hello(self) -> None:
        self.push_update(reset=True)

    # -- data out ---------------------------------------------------------------------
    def push_update(self, *, reset: bool) -> p.UpdateMsg:
        """Send the browser the changed seconds (everything when ``reset``).

        Called by the stream's subscription (at most every ``every`` seconds) and
        when a control changes; returns the message sent.
        """
        with self._send_lock:
            agg = self.aggregator
            if self.paused:
                seconds: list[p.SecondSummary] = []
            elif reset:
                agg.take_dirty()
                seconds = agg.summaries(window=self.window)
            else:
                seconds = agg.take_dirty()
            self.health = self.live_health.lights()
            msg: p.UpdateMsg = {
                "type": "update",
                "reset": reset and not self.paused,
                "window": self.window,
                "now": int(self._clock()),
                "paused": self.paused,
                "seconds": seconds,
                "health": self.health,
                "alerts": self.alerts.items[:20],
                "routes": agg.routes,
                "sources": agg.sources,
                "instances": by_host(agg.instances),
                "stats": dict(agg.stats),
            }
            self.send(msg)
            self._last_push = time.monotonic()
            self.last_update = msg
            self.updates_sent += 1
            return msg

    def summaries(self) -> list[p.SecondSummary]:
        """The per-second summaries now shown (under the current filters and window)."""
        return self.aggregator.summaries(window=self.window)

    def figures(self) -> dict[str, dict[str, Any]]:
        """The charts now shown, as Plotly figure dicts."""
        return dashboard_figures(self.summaries(), max_routes=self.max_routes)

    def freeze(self, *, png: bool = True, display: bool = False) -> Frozen:
        """Static copies of the charts (Plotly HTML, offline; PNG via kaleido) for sharing."""
        from perfnb.widgets.freeze import freeze_figures

        return freeze_figures(
            self.figures(),
            title=self.title,
            tables={
                "readouts": "".join(f"<p>{html.escape(v)}</p>" for v in self.readouts.values())
            },
            health=self.health,
            alerts=self.alerts.items,
            png=png,
            display=display,
        )

    def close(self) -> None:
        """Stop following the stream and close the widget."""
        # also reached from __del__ of a half-made widget (a bad option), hence getattr
        sub = getattr(self, "_subscription", None)
        self._subscription = None
        if sub is not None:
            sub.close()
        live = getattr(self, "live_health", None)
        if live is not None:
            live.close()
        super().close()
