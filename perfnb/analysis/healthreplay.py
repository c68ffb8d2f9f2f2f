"""Replaying stored records through a health engine in pieces, on a simulated clock.

:class:`PieceReplay` feeds a :class:`~perfnb.analysis.health.HealthEngine` records
that arrive piece by piece (a day of a store, a time slice of a day), oldest piece
first, and judges the last window only when told the replay is over. Fed one piece
or a thousand, the engine sees the same records in the same order and gives the
same transitions and alerts: only one piece has to be in memory at a time.

>>> from datetime import datetime, timedelta, timezone
>>> from perfnb.analysis.health import HealthConfig, HealthEngine
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> rows = [{"time": t + timedelta(seconds=s), "source": "server", "kind": "http",
...          "route": "/a", "status": 200, "duration_ms": 900.0} for s in range(3)]
>>> replay = PieceReplay(HealthEngine(HealthConfig(window_s=1, min_requests=1)))
>>> replay.feed(rows[:1]) + replay.feed(rows[1:]) + replay.finish()  # doctest: +ELLIPSIS
[{'time': ..., 'source': 'perfnb', 'kind': 'health', 'name': 'serverResponse', ...}]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from perfnb.analysis.healthrecords import records_of
from perfnb.errors import RecordError
from perfnb.schema import Record

if TYPE_CHECKING:
    import pandas as pd

    from perfnb.analysis.health import HealthEngine

__all__ = ["PieceReplay"]


class PieceReplay:
    """A replay fed in time-ordered pieces: :meth:`feed` each, then :meth:`finish`.

    The engine's clock follows the records' times (``stretch`` multiplies the time
    since the first record, as in :meth:`HealthEngine.replay`). Each piece is sorted
    by time; pieces must come oldest first (a record older than one already fed is
    a :class:`~perfnb.errors.RecordError`: a replay cut into pieces would otherwise
    differ from the same records replayed at once). A piece boundary judges nothing
    on its own: windows are judged when a later record's time passes them, and the
    last one by :meth:`finish`.

    >>> from perfnb.analysis.health import HealthEngine
    >>> replay = PieceReplay(HealthEngine())
    >>> replay.feed([]), replay.finish()
    ([], [])
    """

    def __init__(self, engine: HealthEngine, *, stretch: float = 1.0) -> None:
        self.engine = engine
        self.stretch = stretch
        self._origin: datetime | None = None
        self._last: datetime | None = None
        self._finished = False
        #: Records fed so far (rows without a time are not counted: they are skipped).
        self.records = 0

    def feed(self, piece: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[Record]:
        """Run one piece through the engine; return the health and alert records it made."""
        if self._finished:
            raise RecordError("piece: got one after finish(); expected every piece before it")
        records = records_of(piece)
        if not records:
            return []
        first = records[0]["time"]
        if self._last is not None and first < self._last:
            raise RecordError(
                f"time: got {first.isoformat()} at the start of a piece; expected pieces in "
                f"time order (at or after {self._last.isoformat()}, the last record fed)"
            )
        if self._origin is None:
            self._origin = first
        self._last = records[-1]["time"]
        self.records += len(records)
        return self._run(records, self._origin)

    def _run(self, records: list[Record], origin: datetime) -> list[Record]:
        # The engine's own stepping, one record at a time, as HealthEngine.replay does it:
        # the clock moves to each record's time before the record is taken.
        engine, stretch = self.engine, self.stretch
        out: list[Record] = []
        for record in records:
            if stretch != 1.0:
                record = {**record, "time": origin + (record["time"] - origin) * stretch}
            engine._advance(record["time"].timestamp())
            engine._take_safely(record)
            out.extend(engine._drain())
        return out

    def finish(self) -> list[Record]:
        """Judge the last window (if any record was fed); return what that made."""
        if self._finished:
            return []
        self._finished = True
        if self._origin is None:
            return []  # nothing fed: like replaying no records, no window to judge
        engine = self.engine
        engine._advance(engine._now + engine.config.window_s)
        return engine._drain()
