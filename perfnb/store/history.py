"""History over many days: daily summaries kept fresh, read fast, and merged.

A day's stored summary (:mod:`perfnb.store.summaries`) is used while it is fresh;
a day whose detail changed since (or that has none yet) is summarised again —
and the summary written when the day is closed, so the next read finds it. Days
whose detail retention removed are read from their summaries alone.

Stored summaries are read from memory while their files are unchanged, else from
the month index (:mod:`perfnb.store.summary_index`) while it matches them, else
from the files themselves — after which the index is rewritten. Multi-day figures
come from merging the daily sketches (:mod:`perfnb.store.merging`).

>>> from perfnb.store.summaries import summary_schema
>>> merge(summary_schema().empty_table(), by=("route",)).shape[0]
0
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import pyarrow as pa
import pyarrow.fs as pafs

from perfnb.errors import StoreError
from perfnb.store.compact import day_files, vanished
from perfnb.store.merging import MEMORY_NAMES, merge, select
from perfnb.store.objects import days_with_files, is_object_store
from perfnb.store.parquet import day_dir
from perfnb.store.retention import retiring_days
from perfnb.store.summaries import (
    SUMMARY_FILE,
    DaySummary,
    SourceFile,
    build_summary,
    count_records,
    is_fresh,
    list_sources,
    read_detail,
    read_sources,
    read_summary,
    replaces,
    summary_schema,
    write_summary,
)
from perfnb.store.summary_index import Entry, Stamp, read_index, write_index

__all__ = ["MEMORY_NAMES", "Days", "merge", "select"]

logger = logging.getLogger("perfnb.store")

#: Stored summaries kept in memory (~0.3 MB a day of 50 routes with their load runs).
_CACHED_DAYS: Final = 400
#: Threads reading the days of a multi-day read.
_READERS: Final = 4
#: Reads of a day's detail, listing it again after a file vanished under the read.
_ATTEMPTS: Final = 5


class _Vanished(Exception):
    """A file listed a moment ago is gone: the day is checked again."""


@dataclass
class Days:
    """The detail and summary directories of one store, and what reads them needs."""

    fs: pafs.FileSystem
    root: str
    local: bool
    known: dict[str, bool]
    # Stored summaries read so far, by path, checked against the file's stamp.
    _cache: dict[str, tuple[Stamp, list[SourceFile], pa.Table | None]] = field(
        default_factory=dict, repr=False
    )
    #: Whether to use and keep the month indexes (:mod:`perfnb.store.summary_index`).
    indexed: bool = True
    # Days whose rows were read from their summary file: the index lacks them.
    _unindexed: set[date] = field(default_factory=set, repr=False)

    def detail_dir(self, day: date) -> str:
        return f"{self.root}/events/{day_dir(day)}"

    def summary_dir(self, day: date) -> str:
        return f"{self.root}/daily/{day_dir(day)}"

    def summary_path(self, day: date) -> str:
        return f"{self.summary_dir(day)}/{SUMMARY_FILE}"

    def summary_days(self) -> list[date]:
        """Days that have a stored summary."""
        if is_object_store(self.fs):  # one listing rather than a request per day
            return days_with_files(self.fs, f"{self.root}/daily", name=SUMMARY_FILE)
        selector = pafs.FileSelector(f"{self.root}/daily", allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("date="):
                try:
                    day = date.fromisoformat(info.base_name[5:])
                except ValueError:
                    continue
                if self.fs.get_file_info(self.summary_path(day)).type == pafs.FileType.File:
                    out.append(day)
        return sorted(out)

    # -- one day -----------------------------------------------------------------------

    def _stamp(self, day: date) -> Stamp | None:
        info = self.fs.get_file_info(self.summary_path(day))
        if info.type != pafs.FileType.File:
            return None
        return (info.mtime_ns or 0, info.size or 0)

    def _remember(
        self, day: date, stamp: Stamp, sources: list[SourceFile], table: pa.Table | None
    ) -> None:
        if len(self._cache) >= _CACHED_DAYS:
            self._cache.pop(next(iter(self._cache)))
        self._cache[self.summary_path(day)] = (stamp, sources, table)

    def _cached(self, day: date, stamp: Stamp) -> pa.Table | None:
        hit = self._cache.get(self.summary_path(day))
        return hit[2] if hit is not None and hit[0] == stamp else None

    def _stored(self, day: date, *, rows: bool) -> tuple[list[SourceFile] | None, pa.Table | None]:
        """A stored summary's sources (and rows, if asked), from memory while unchanged."""
        path = self.summary_path(day)
        # Stat before reading: rows read after a stat are never older than its stamp.
        stamp = self._stamp(day)
        if stamp is None:
            return None, None
        hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp and (hit[2] is not None or not rows):
            return hit[1], hit[2]
        try:
            if rows:
                table, sources = read_summary(self.fs, path)
                self._unindexed.add(day)
            else:
                table, found = None, read_sources(self.fs, path)
                if found is None:
                    return None, None
                sources = found
        except StoreError:
            if self._stamp(day) is None:
                return None, None  # retention deleted it since the stat
            raise
        self._remember(day, stamp, sources, table)
        return sources, table

    # -- the index ---------------------------------------------------------------------

    def _from_index(self, days: Sequence[date]) -> set[date]:
        """Fill the memory cache from the index for ``days``; the days still to read."""
        if not self.indexed:
            return set(days)
        needed: dict[date, dict[date, Stamp]] = {}
        missing = set()
        for day in days:
            stamp = self._stamp(day)
            if stamp is None:
                missing.add(day)  # built from the detail, if it has any
                continue
            if self._cached(day, stamp) is not None:
                continue
            needed.setdefault(day.replace(day=1), {})[day] = stamp
        for month, wanted in needed.items():
            found = read_index(self.fs, self.root, month, wanted)
            for day, entry in found.items():
                self._remember(day, entry.stamp, list(entry.sources), entry.table)
            missing |= wanted.keys() - found.keys()
        return missing

    def save_index(self, days: Sequence[date]) -> None:
        """Rewrite the index of the months of ``days`` from their current summary files.

        Days whose summary is gone are left out (a month without any loses its index).
        """
        if not self.indexed:
            return
        months = {day.replace(day=1) for day in days}
        stored = self.summary_days()
        for month in sorted(months):
            entries: dict[date, Entry] = {}
            stamps: dict[date, Stamp] = {}
            for day in stored:
                if day.replace(day=1) != month:
                    continue
                stamp = self._stamp(day)
                hit = self._cache.get(self.summary_path(day))
                if stamp is None:
                    continue
                if hit is not None and hit[0] == stamp and hit[2] is not None:
                    entries[day] = Entry(stamp, tuple(hit[1]), hit[2])
                else:
                    stamps[day] = stamp
            entries.update(read_index(self.fs, self.root, month, stamps))
            for day in stamps.keys() - entries.keys():
                try:
                    self._stored(day, rows=True)
                except StoreError as exc:  # left out: a read falls back to the file
                    logger.warning("%s", exc)
                    continue
                # The cache's tuple, not the values returned: its stamp and rows come
                # from one read even if another thread has replaced it since.
                hit = self._cache.get(self.summary_path(day))
                if hit is not None and hit[2] is not None:
                    entries[day] = Entry(hit[0], tuple(hit[1]), hit[2])
            # Even when the write failed: the next change tries again, not every read.
            write_index(self.fs, self.root, month, entries, local=self.local)
            # A snapshot (list() holds the GIL): other threads may add days meanwhile.
            done = [day for day in list(self._unindexed) if day.replace(day=1) == month]
            self._unindexed.difference_update(done)

    def _build(self, day: date) -> tuple[pa.Table, list[SourceFile]]:
        directory = self.detail_dir(day)
        for attempt in range(_ATTEMPTS):
            infos = day_files(self.fs, directory)
            try:
                sources = list_sources(self.fs, directory, infos)
                detail = read_detail(self.fs, directory, [s.name for s in sources], self.known)
            except (OSError, StoreError, pa.ArrowException):
                # A compaction or retention removed a file since the listing: list again.
                if attempt + 1 < _ATTEMPTS and vanished(self.fs, [i.path for i in infos]):
                    continue
                raise
            break
        return build_summary(detail), sources

    def _settled(self, day: date, sources: Sequence[SourceFile]) -> bool:
        """Whether a summary built from ``sources`` may be stored by a read or a close.

        Only while the day's detail is still those files and no retention is deleting
        it: a summary built from the part of a day retention has not yet deleted
        would count too few records and outlive the detail.
        """
        now = {(i.base_name, i.size) for i in day_files(self.fs, self.detail_dir(day))}
        if now != {(s.name, s.size) for s in sources}:
            return False
        retiring = retiring_days(self.fs, self.root)
        return retiring is not None and day not in retiring

    def _write(self, day: date, table: pa.Table, sources: list[SourceFile]) -> str:
        directory = self.summary_dir(day)
        return write_summary(self.fs, directory, table, day=day, sources=sources, local=self.local)

    def summarize(self, day: date, *, index: bool = True) -> DaySummary:
        """Summarise ``day``'s detail and write the summary (replacing any).

        ``index`` rewrites the month's index too; batches of days pass ``False`` and
        call :meth:`save_index` once.
        """
        summary = self._summarize(day, settled=False)
        if index:
            self.save_index([day])
        return summary

    def _summarize(self, day: date, *, settled: bool) -> DaySummary:
        """:meth:`summarize` without the index.

        ``settled`` writes only what :meth:`_settled` allows; a summary left unwritten
        has ``path`` ``""``.
        """
        table, sources = self._build(day)
        if not sources:
            raise StoreError(f"day: {day} has no detail to summarise")
        if settled and not self._settled(day, sources):
            path = ""
        else:
            path = self._write(day, table, sources)
        return DaySummary(day, path, table.num_rows, sum(s.rows for s in sources), tuple(sources))

    def stale(self, day: date) -> str | None:
        """Why ``day``'s stored summary does not describe its detail; ``None`` when it does.

        A day without detail (retention removed it) is fresh if it has a summary.
        """
        return self._check(day, rows=False)[0]

    def _check(self, day: date, *, rows: bool) -> tuple[str | None, pa.Table | None]:
        """:meth:`stale`'s answer, and the stored rows when asked for and fresh."""
        for attempt in range(_ATTEMPTS):
            try:
                return self._check_once(day, rows=rows)
            except _Vanished:
                if attempt + 1 == _ATTEMPTS:
                    msg = f"day {day}: its detail kept changing under the read"
                    raise StoreError(msg) from None
        raise AssertionError("unreachable")

    def _check_once(self, day: date, *, rows: bool) -> tuple[str | None, pa.Table | None]:
        recorded, table = self._stored(day, rows=rows)
        infos = day_files(self.fs, self.detail_dir(day))
        if recorded is None:
            return ("no summary" if infos else "no detail and no summary"), None
        if not infos:
            return None, table
        now = {(i.base_name, i.size) for i in infos}
        then = {(s.name, s.size) for s in recorded}
        if now == then:
            return None, table  # files never change once named: same names and sizes, same rows
        if now < then:
            # Some of the very files it was made from, no others: retention is deleting
            # the day's detail (or was stopped doing so). The summary stands for all of it.
            return None, table
        try:
            current = list_sources(self.fs, self.detail_dir(day), infos)
        except StoreError:
            if vanished(self.fs, [i.path for i in infos]):
                raise _Vanished from None  # a compaction or retention ran: check again
            raise
        names = [s.name for s in current if s.name not in {r.name for r in recorded}]
        if is_fresh(recorded, current, replaces(self.fs, self.detail_dir(day), names)):
            return None, table
        return "the detail changed since it was summarised", None

    def verify(self, day: date) -> str | None:
        """Why ``day``'s summary cannot stand in for its detail; ``None`` when it can.

        Re-reads the stored summary: its counts must add up to the detail's rows.
        """
        reason = self.stale(day)
        if reason is not None:
            return reason
        counted = count_records(self.fs, self.summary_path(day))
        current = list_sources(self.fs, self.detail_dir(day))
        rows = sum(s.rows for s in current)
        if counted == rows:
            return None
        recorded = read_sources(self.fs, self.summary_path(day)) or []
        now = {(s.name, s.size, s.rows) for s in current}
        if now < {(s.name, s.size, s.rows) for s in recorded}:
            # Part of the detail is already gone (an interrupted retention): the
            # summary must count all it was made from.
            made_from = sum(s.rows for s in recorded)
            if counted == made_from:
                return None
            return f"the summary counts {counted} records but was made from {made_from}"
        return f"the summary counts {counted} records but the detail holds {rows}"

    def table(self, day: date, *, closed: bool) -> pa.Table | None:
        """``day``'s summary rows, fresh; written first when the day is ``closed``."""
        reason, stored = self._check(day, rows=True)
        if reason is None and stored is not None:
            return stored
        table, sources = self._build(day)
        if not sources:
            return None
        if closed:
            try:
                if self._settled(day, sources):
                    self._write(day, table, sources)
                    self._unindexed.add(day)
            except StoreError as exc:  # a read still answers; the next one tries again
                logger.warning("%s", exc)
        return table

    def close(self, days: Sequence[date]) -> list[DaySummary]:
        """Summarise each of ``days`` (closed ones) whose summary is missing or stale."""
        out = []
        for day in days:
            reason = self.stale(day)
            if reason is not None and reason != "no detail and no summary":
                summary = self._summarize(day, settled=True)
                if summary.path:
                    out.append(summary)
        if out:
            self.save_index([s.day for s in out])
        return out

    def load(self, days: Sequence[date], *, today: date) -> pa.Table:
        """The summary rows of ``days`` with a ``date`` column, in day order."""

        def one(day: date) -> pa.Table | None:
            return self.table(day, closed=day < today)

        # One file for a month's stored summaries rather than one a day: a cold
        # read's cost was mostly opening and decoding each day's file.
        unread = self._from_index(days)
        # Reading (or building) a day releases the GIL for most of its work: a few
        # threads overlap the days' files on several cores. Days in memory need no
        # threads (starting them costs more than a stat and a listing).
        workers = min(_READERS, len(unread), os.cpu_count() or 1)
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="perfnb-summaries") as pool:
                tables = list(pool.map(one, days))
        else:
            tables = [one(day) for day in days]
        if self._unindexed.intersection(days):
            self.save_index(sorted(self._unindexed.intersection(days)))
        parts = []
        for day, table in zip(days, tables, strict=True):
            if table is not None and table.num_rows:
                stamp = pa.array([day] * table.num_rows, pa.date32())
                parts.append(table.add_column(0, "date", stamp))
        if not parts:
            return summary_schema().insert(0, pa.field("date", pa.date32())).empty_table()
        return pa.concat_tables(parts)
