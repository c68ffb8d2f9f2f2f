"""A widget's health engine: fed off the kernel thread, shown as lights and alert items.

:class:`LiveHealth` wraps a :class:`~perfnb.analysis.health.HealthEngine` for a
live widget: the stream's subscription thread feeds it batches, a small ticker
thread moves its clock on when no records come (so a window with the last
records of a burst is still judged, and a state still recovers), and the kernel
thread reads its lights. Transitions and alerts go to an
:class:`~perfnb.widgets.lights.AlertLog`; the same alert arriving twice (from this
engine and as a record from a :func:`~perfnb.analysis.watch.watch` on the same
stream) is listed once.

>>> from perfnb.widgets.lights import AlertLog
>>> live = LiveHealth(alerts=AlertLog(clock=lambda: 0.0), clock=lambda: 0.0, tick=None)
>>> live.lights()["serverResponse"]["state"]
'unknown'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from perfnb.analysis.health import HealthEngine
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.analysis.healthrecords import STATES
from perfnb.schema import Record
from perfnb.widgets._protocols import HealthLight
from perfnb.widgets.lights import AlertLog, engine_lights

__all__ = ["LiveHealth"]

_LEVEL: Final = {0: "info", 1: "warning", 2: "critical"}
# An alert message seen again within this many seconds is the same alert.
_SAME_ALERT_S: Final = 60.0


class LiveHealth:
    """One engine for one widget; thread-safe (one lock around the engine).

    ``on_change()`` is called (from the ticker thread) when a tick produced
    transitions or alerts, so the widget can send its lights.
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        alerts: AlertLog,
        clock: Callable[[], float] = time.time,
        tick: float | None = 1.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config or HealthConfig()
        self.alerts = alerts
        self.errors = 0
        self._clock = clock
        self._engine = HealthEngine(self.config, clock=clock)
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._on_change = on_change
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick is not None:
            self._ticker = threading.Thread(
                target=self._tick_loop, args=(tick,), name="perfnb-dashboard-health", daemon=True
            )
            self._ticker.start()

    @property
    def engine(self) -> HealthEngine:
        """The engine itself (read it under no other thread's feet: prefer :meth:`lights`)."""
        return self._engine

    def lights(self) -> dict[str, HealthLight]:
        """The engine's three states as lights, with their reasons."""
        with self._lock:
            return engine_lights(self._engine.states)

    def active_alerts(self) -> list[Record]:
        """Alerts the engine holds open."""
        with self._lock:
            return self._engine.active_alerts

    def replay(self, frame: Any, *, include_load: bool | None = None) -> None:
        """Start over from a frame of history (a new engine if ``include_load`` changes)."""
        with self._lock:
            if include_load is not None and include_load != self.config.include_load:
                self.config = self.config.replace(include_load=include_load)
            self._engine = HealthEngine(self.config, clock=self._clock)
            try:
                out = self._engine.replay(frame)
            except Exception:
                # history is a bonus: live records still come in if it cannot be read
                self.errors += 1
                return
            self._show(out)

    def observe(self, records: Iterable[Mapping[str, Any]]) -> list[Record]:
        """Feed a batch (perfnb's own records are ignored by the engine)."""
        with self._lock:
            out = self._engine.observe(records)
            self._show(out)
            return out

    def add_alert_record(self, record: Mapping[str, Any]) -> None:
        """An ``alert`` record from the stream (a watcher's, the app's) into the list."""
        tags = record.get("tags") or {}
        level = tags.get("level", "warning")
        if level not in ("info", "warning", "critical"):
            level = "warning"
        message = tags.get("message") or record.get("error_message") or record.get("name")
        with self._lock:
            self._add(
                level,
                str(record.get("source", "")),
                str(message or "alert"),
                record["time"].timestamp(),
            )

    def close(self) -> None:
        """Stop the ticker."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2.0)

    # -- inside the lock --------------------------------------------------------------
    def _show(self, out: list[Record]) -> None:
        for record in out:
            tags = record.get("tags") or {}
            t = record["time"].timestamp()
            name = str(record.get("name", ""))
            if record["kind"] == "alert":
                self._add(str(tags.get("level", "warning")), "perfnb", tags.get("message", name), t)
                continue
            state, previous = tags.get("state", ""), tags.get("previous", "")
            levels = STATES.get(name, ())
            after = levels.index(state) if state in levels else 0
            before = levels.index(previous) if previous in levels else 0
            if after > before:
                self._add(_LEVEL[after], name, f"{name} {state}: {tags.get('reason', '')}", t)
            elif after < before and after == 0:
                self._add("info", name, f"{name} back to {state}: {tags.get('reason', '')}", t)

    def _add(self, level: str, source: str, message: str, t: float) -> None:
        last = self._seen.get(message)
        if last is not None and abs(t - last) < _SAME_ALERT_S:
            return
        self._seen[message] = t
        if len(self._seen) > 1000:
            # keep the memory of recent messages bounded: drop the oldest half
            for key in sorted(self._seen, key=self._seen.__getitem__)[:500]:
                del self._seen[key]
        self.alerts.add(level, source, message, t=t)

    def _tick_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                with self._lock:
                    out = self._engine.tick()
                    self._show(out)
                if out and self._on_change is not None:
                    self._on_change()
            except Exception:
                # the ticker must outlive a bad moment; the count says it happened
                self.errors += 1
