"""The store's history: daily summaries, and multi-day figures from them.

:class:`StoreHistory` is the part of :class:`~perfnb.store.Store` that works on
days rather than records: it asks :mod:`perfnb.store.history` for summaries
(kept fresh, merged over many days).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa

from perfnb.errors import StoreError
from perfnb.store.history import Days, merge, select
from perfnb.store.query import TimeLike, to_utc
from perfnb.store.summaries import DaySummary

__all__ = ["StoreHistory", "day_of"]

#: Summary columns holding sketches; :meth:`StoreHistory.summaries` leaves them out unless asked.
_SKETCH_COLUMNS = ("duration_keys", "duration_counts", "value_keys", "value_counts")


class StoreHistory(abc.ABC):
    """Summaries of a store; the store provides its days and ``_history``."""

    _history: Days

    @abc.abstractmethod
    def days(self) -> list[date]:
        """The days that have detail, in order."""

    def summarize(self, day: date | str) -> DaySummary:
        """Summarise one day's detail now, replacing its stored summary atomically.

        See :mod:`perfnb.store.summaries` for what a summary holds. Closed days are
        summarised on their own (:meth:`close_days`, reads, retention); this is the
        way to ask for one, today's included.

        >>> import tempfile
        >>> from datetime import datetime, timezone
        >>> from perfnb.store import Store
        >>> store = Store(tempfile.mkdtemp())
        >>> store.append([{"time": datetime(2026, 1, 1, tzinfo=timezone.utc),
        ...                "source": "server", "kind": "http", "duration_ms": 4.0}])
        1
        >>> store.summarize("2026-01-01").records
        1
        """
        return self._history.summarize(day_of(day))

    def close_days(self, *, today: date | None = None) -> list[DaySummary]:
        """Summarise every closed day whose summary is missing or stale; return what was written.

        Cheap when there is nothing to do: a listing and a footer per day.
        """
        today = today or datetime.now(UTC).date()
        return self._history.close([day for day in self.days() if day < today])

    def summaries(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        routes: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        services: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        include_load: bool = False,
        sketches: bool = False,
    ) -> pd.DataFrame:
        """The daily summary rows of the days overlapping ``[start, end)``, with a ``date``.

        Whole days: a summary row covers its day. Stale or missing summaries of
        days that still have detail are made first (and stored for closed days).
        ``sketches`` keeps the bucket lists. Load runs' rows only when
        ``include_load`` or ``run_ids`` asks for them.

        >>> import tempfile
        >>> from perfnb.store import Store
        >>> Store(tempfile.mkdtemp()).summaries().shape[0]
        0
        """
        rows = self._summary_rows(start, end)
        chosen = select(
            rows,
            routes=routes,
            sources=sources,
            kinds=kinds,
            services=services,
            run_ids=run_ids,
            include_load=include_load,
        )
        if not sketches:
            rows = rows.drop_columns(list(_SKETCH_COLUMNS))
        frame: pd.DataFrame = rows.filter(pa.array(chosen)).to_pandas()
        return frame

    def summary(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        by: Sequence[str] = ("route",),
        routes: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        kinds: Sequence[str] | None = ("http",),
        services: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        include_load: bool = False,
        vitals: bool = True,
        memory: bool = True,
    ) -> pd.DataFrame:
        """Figures per ``by`` group over the days overlapping ``[start, end)``, from daily sketches.

        Percentiles come from merging the days' sketches (within 1% of exact ones),
        never from averaging daily percentiles; counts are exact. Columns: ``by``,
        ``count``, ``errors``, ``error_rate``, ``status_5xx``, ``status_4xx``,
        ``timeouts``, ``exceptions``, ``p50_ms`` … ``p99_ms``, ``max_ms``, ``mean_ms``,
        ``server_ms_mean``, ``app_ms_mean``, ``db_ms_mean``, ``request_bytes``,
        ``response_bytes`` over the records of ``kinds``; ``vitals`` adds ``lcp_p75``
        and the like, ``memory`` adds ``rss_bytes_max``/``_mean`` and
        ``js_heap_bytes_max``/``_mean`` (see :func:`perfnb.store.history.merge`).
        ``by`` takes any of route, source, kind, service, method, name, run_id, date;
        with ``include_load`` and ``run_id`` in ``by``, each load run has its rows.

        >>> import tempfile
        >>> from perfnb.store import Store
        >>> Store(tempfile.mkdtemp()).summary().shape[0]
        0
        """
        rows = self._summary_rows(start, end)
        chosen = select(
            rows,
            routes=routes,
            sources=sources,
            services=services,
            run_ids=run_ids,
            include_load=include_load,
        )
        return merge(rows, chosen, by=by, kinds=kinds, vitals=vitals, memory=memory)

    def _summary_rows(self, start: TimeLike, end: TimeLike) -> pa.Table:
        first, last = to_utc(start, name="start"), to_utc(end, name="end")
        wanted = []
        for day in sorted({*self.days(), *self._history.summary_days()}):
            if first is not None and day < first.date():
                continue
            if last is not None and datetime.combine(day, datetime.min.time(), UTC) >= last:
                continue
            wanted.append(day)
        return self._history.load(wanted, today=datetime.now(UTC).date())


def day_of(value: date | str) -> date:
    """A ``date`` from a date or ``YYYY-MM-DD`` (a datetime is refused: it is not a day)."""
    if isinstance(value, datetime):
        raise StoreError(f"day: got {value!r}; expected a date or YYYY-MM-DD")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise StoreError(f"day: got {value!r}; expected a date or YYYY-MM-DD") from None
