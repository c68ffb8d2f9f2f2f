"""A load run's running counts, merged from the workers' reports as they arrive.

The controller keeps two views of every request: per second and route (the
rolling window the safety limits judge, and the per-second records, handed out
once a second is complete), and per route over the whole run (the result).
Reports come in on the controller's thread while a notebook reads the live
figures from its own, so every access takes the tally's lock.

>>> tally = Tally()
>>> tally.total().count, tally.window(5.0).requests
(0, 0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from perfnb.load.histogram import Histogram
from perfnb.load.safety import Window
from perfnb.load.stats import Cell

__all__ = ["Tally"]

#: A (second, route, method) key of the per-second cells.
SecondKey = tuple[int, str, str]


class Tally:
    """The counts of one run so far: by (second, route, method), by route, and the generator's."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seconds: dict[SecondKey, Cell] = {}
        self._routes: dict[tuple[str, str], Cell] = {}
        self.send_lag = Histogram()
        self.dropped = 0
        self.reconnects = 0
        self.journey_errors = 0
        # each worker's requests still waiting for a response, as of its last report
        self._inflight: dict[int, Histogram] = {}

    def add(self, payload: dict[str, Any]) -> None:
        """Merge one worker report (:meth:`~perfnb.load.stats.Stats.drain` plus its extras)."""
        with self._lock:
            for key, wire in payload["cells"].items():
                cell = Cell.from_wire(wire)
                _, route, method = key
                mine = self._seconds.get(key)
                self._seconds[key] = cell if mine is None else mine.merge(cell)
                total = self._routes.get((route, method))
                if total is None:
                    self._routes[(route, method)] = Cell().merge(cell)
                else:
                    total.merge(cell)
            self.send_lag.merge(Histogram.from_dict(payload["send_lag"]))
            self.dropped += int(payload["dropped"])
            self.reconnects += int(payload.get("reconnects", 0))
            self.journey_errors += int(payload["journey_errors"])
            inflight = payload.get("inflight")
            if inflight is not None:
                self._inflight[int(payload.get("worker", 0))] = Histogram.from_dict(inflight)

    def window(self, seconds: float) -> Window:
        """Requests, errors and p95 over the last ``seconds`` whole seconds (this one included).

        The p95 is of every request's time: those that succeeded, those that failed
        (their real elapsed time) and those still waiting for a response (how long
        they have waited so far), so a target that stops answering shows at once.
        """
        first = int(self._clock()) - int(seconds) + 1
        requests = errors = 0
        times = Histogram()
        with self._lock:
            for (sec, _, _), cell in self._seconds.items():
                if sec >= first:
                    requests += cell.count
                    errors += cell.error_count
                    times.merge(cell.latency)
                    times.merge(cell.failed)
            inflight = Histogram()
            for ages in self._inflight.values():
                inflight.merge(ages)
        times.merge(inflight)
        return Window(
            requests=requests,
            errors=errors,
            p95_ms=times.percentile(95),
            inflight=inflight.count,
        )

    def routes(self) -> dict[tuple[str, str], Cell]:
        """Each (route, method)'s counts over the run so far (copies)."""
        with self._lock:
            return {key: Cell().merge(cell) for key, cell in self._routes.items()}

    def total(self) -> Cell:
        """Every route's counts merged into one cell."""
        out = Cell()
        with self._lock:
            for cell in self._routes.values():
                out.merge(cell)
        return out

    def take_seconds(self, *, settle: int | None = 2) -> list[tuple[SecondKey, Cell]]:
        """Hand out (and forget) the per-second cells at least ``settle`` seconds old, in order.

        Reports arrive several times a second, so a second is complete a little after it
        ended; ``settle=None`` hands out every cell (at the end of the run).
        """
        cutoff = None if settle is None else int(self._clock()) - settle
        with self._lock:
            ready = sorted(k for k in self._seconds if cutoff is None or k[0] <= cutoff)
            return [(k, self._seconds.pop(k)) for k in ready]
