"""The dashboard's small readouts: the cost of watching, and the last load run's bottleneck.

- **overhead**: perfnb's own time as a share of the server's time over the last
  minute (:func:`perfnb.analysis.overhead.overhead_share`), worked out at most
  every ``every`` seconds from the stream's frame.
- **bottleneck**: records of load runs (``run_id`` set) go to a
  :class:`~perfnb.load.bottleneck.LevelRecorder` per run; when the run's
  ``run_stop`` record arrives, its bottleneck is judged. The dashboard does not
  know the run's shape, so its levels are the requests sent per second.

>>> r = Readouts(clock=lambda: 0.0)
>>> r.take([])
False
>>> r.text()["bottleneck"]
'no load run seen yet'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from perfnb.load.bottleneck import Bottleneck
from perfnb.load.levels import LevelRecorder

__all__ = ["Readouts"]

_RECENT_S: Final = 60.0


class Readouts:
    """What the dashboard's readout line says; fed by the dashboard's record batches."""

    def __init__(self, *, every: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.every = every
        self._clock = clock
        self._recorders: dict[str, LevelRecorder] = {}
        self._last_overhead = -math.inf
        self.overhead_share: float | None = None
        self.bottleneck: Bottleneck | None = None
        self.bottleneck_run = ""

    def take(self, records: Iterable[Mapping[str, Any]]) -> bool:
        """Feed load-run records in; True when a run ended and its bottleneck was judged."""
        judged = False
        for rec in records:
            run = rec.get("run_id")
            if not run or rec.get("source") not in ("load", "server"):
                continue
            recorder = self._recorders.get(run)
            if recorder is None:
                if rec.get("source") != "load":
                    continue
                if len(self._recorders) >= 4:  # a few runs at once at most; oldest goes
                    self._recorders.pop(next(iter(self._recorders)))
                recorder = self._recorders[run] = LevelRecorder(run_id=run)
            recorder(rec)  # type: ignore[arg-type]
            if rec.get("kind") == "load" and rec.get("name") == "run_stop":
                self.bottleneck = self._recorders.pop(run).bottleneck()
                self.bottleneck_run = run
                judged = True
        return judged

    def overhead_due(self) -> bool:
        """Whether the overhead share is due for another look."""
        return self._clock() - self._last_overhead >= self.every

    def update_overhead(self, frame: Any) -> None:
        """Work the overhead share out again from ``frame`` (the last minute of the stream)."""
        from perfnb.analysis.overhead import overhead_total

        self._last_overhead = self._clock()
        share = overhead_total(frame)
        self.overhead_share = None if math.isnan(share) else share

    def text(self) -> dict[str, str]:
        """The readouts as text."""
        if self.overhead_share is None:
            overhead = "perfnb overhead: no data (no overhead records in the last minute)"
        else:
            overhead = f"perfnb overhead: {self.overhead_share:.2%} of server time (last minute)"
        if self.bottleneck is None:
            bottleneck = "no load run seen yet"
        else:
            bottleneck = f"load run {self.bottleneck_run}: {self.bottleneck.describe()}"
        return {"overhead": overhead, "bottleneck": bottleneck}
