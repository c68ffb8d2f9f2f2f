"""The store: records kept as hive-partitioned Parquet, one directory per UTC day.

Layout under the root (a local folder, or any filesystem URI pyarrow knows)::

    <root>/events/date=YYYY-MM-DD/<unique>.parquet   detail records
    <root>/daily/date=YYYY-MM-DD/summary.parquet     daily summaries (perfnb.store.summaries)
    <root>/daily/_index/YYYY-MM.arrow                a month's summaries, a derived cache
    <root>/baselines/<name>.json                     saved baselines (perfnb.analysis.compare)
    <root>/_wal/<segment>.log                        append logs of running writers

For a root that is not on the local disk the append log lives in a local folder
(``wal_dir``, by default under ``$XDG_CACHE_HOME/perfnb/wal``, keyed by the
filesystem, endpoint and root), since it must be written with plain memory copies;
a killed writer's log is replayed by the next open of the same store on the same
machine. In object storage (``s3://bucket/prefix``) every file is uploaded whole
under its final name; see :mod:`perfnb.store.objects`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from perfnb.errors import RecordError, StoreError
from perfnb.store import compact as compaction
from perfnb.store import objects
from perfnb.store import retention as retaining
from perfnb.store.export import ExportResult, export_store
from perfnb.store.frames import table_from_frame
from perfnb.store.history import Days
from perfnb.store.parquet import Names, day_dir, split_by_day, write_atomic
from perfnb.store.progress import Progress
from perfnb.store.query import (
    TimeLike,
    check_columns,
    connect,
    empty_frame,
    read_files,
    read_table,
    summary_sql,
    table_to_frame,
    to_utc,
)
from perfnb.store.rows import Encoder, Memory, decode
from perfnb.store.storehistory import StoreHistory, day_of
from perfnb.store.wal import recover
from perfnb.store.writer import StoreWriter

__all__ = ["Store"]

#: Temporary files older than this are left-overs of a crash, not writes in flight.
_STALE_SECONDS = 3600.0
#: Reads of the detail (of a day, in a read), listing it again after a file vanished under it.
_ATTEMPTS = 5

logger = logging.getLogger("perfnb.store")


class Store(StoreHistory):
    """Records as Parquet daily partitions under ``root``; reads via pyarrow and DuckDB.

    Opening a store replays the append logs that killed writers left behind;
    :attr:`recovered` says how many records that stored.

    ``root`` is a folder or a URI. ``s3://bucket/prefix`` takes its credentials the
    usual way (environment, ``~/.aws`` profiles, instance roles) and its endpoint from
    ``storage_options={"endpoint_url": ...}`` (or any other argument of
    :class:`pyarrow.fs.S3FileSystem`), ``?endpoint_override=`` or ``AWS_ENDPOINT_URL``;
    ``wal_dir`` names the local folder of its append log (one per store).

    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> store = Store(tempfile.mkdtemp())
    >>> store.append([{"time": datetime(2026, 1, 1, 12, tzinfo=timezone.utc),
    ...                "source": "server", "kind": "http", "route": "/", "status": 200}])
    1
    >>> store.days()
    [datetime.date(2026, 1, 1)]
    >>> store.read()["route"].tolist()
    ['/']
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        *,
        filesystem: pafs.FileSystem | None = None,
        wal_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        endpoint = ""
        if filesystem is None:
            text = os.fspath(root)
            if "://" in text:
                filesystem, path, endpoint = objects.open_uri(text, storage_options)
            else:
                if storage_options:
                    raise StoreError(
                        f"storage_options: only URI roots take them; got the folder {text!r}"
                    )
                filesystem, path = pafs.LocalFileSystem(), str(Path(text).absolute())
        else:
            path = os.fspath(root)
        self.fs: pafs.FileSystem = filesystem
        self.root = path.rstrip("/")
        self.local = isinstance(filesystem, pafs.LocalFileSystem)
        #: Whether the root is in object storage (S3 and the like; see perfnb.store.objects).
        self.objects = objects.is_object_store(filesystem)
        self.events = f"{self.root}/events"
        if wal_dir is not None:
            self.wal_dir = Path(wal_dir)
        elif self.local:
            self.wal_dir = Path(self.root) / "_wal"
        else:
            self.wal_dir = objects.default_wal_dir(filesystem, self.root, endpoint=endpoint)
        if not self.local or wal_dir is not None:
            objects.claim_wal_dir(self.wal_dir, f"{filesystem.type_name}:{endpoint}:{self.root}")
        self._names = Names()
        # Whether each data file seen has the current layout (files never change).
        self._layouts: dict[str, bool] = {}
        self._history = Days(self.fs, self.root, self.local, self._layouts)
        # Closed days this store wrote to, summarised once it writes today's records.
        self._touched: set[date] = set()
        self._checked: date | None = None
        self._touched_lock = threading.Lock()
        if self.objects:
            self._check_bucket()
        else:
            self.fs.create_dir(self.events, recursive=True)
        self._tidy()
        #: Records this open recovered from append logs left by killed writers.
        self.recovered = recover(self.wal_dir, self._write_days, label=self.root)

    def _check_bucket(self) -> None:
        """Fail now, naming the bucket, when it is missing or out of reach (S3 has no folders)."""
        bucket = self.root.split("/", 1)[0]
        try:
            found = self.fs.get_file_info(bucket).type
        except OSError as exc:
            raise StoreError(f"root: cannot reach the bucket {bucket!r}: {exc}") from exc
        if found == pafs.FileType.NotFound:
            raise StoreError(
                f"root: the bucket {bucket!r} does not exist; create it first (perfnb never"
                " creates buckets)"
            )

    def __repr__(self) -> str:
        return f"Store({self.root!r}, filesystem={self.fs.type_name!r})"

    # -- writing -----------------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Store records (dicts or a DataFrame) now, one atomic file per day touched.

        Returns the number of records. A bad record raises
        :class:`~perfnb.errors.RecordError` naming the column; nothing is written then.
        """
        if isinstance(records, pd.DataFrame):
            table = table_from_frame(records)
        else:
            encoder, log = Encoder(), Memory()
            encoder.attach(log)
            for index, record in enumerate(records):
                log.reserve()
                try:
                    encoder.put(record, log)
                except RecordError as exc:
                    raise RecordError(f"record {index}: {exc}") from None
            table = decode(log)
        return self._write_days(table, self._names.next("a"))

    def writer(
        self, *, flush_every: int = 50_000, flush_seconds: float = 1.0, background: bool = True
    ) -> StoreWriter:
        """A buffered writer for high-rate sources; see :class:`StoreWriter`.

        ``background=False`` writes Parquet on the appending thread instead of a
        converter thread.
        """
        return StoreWriter(
            self._write_days,
            self.wal_dir,
            flush_every=flush_every,
            flush_seconds=flush_seconds,
            background=background,
        )

    def _write_days(self, table: pa.Table, name: str) -> int:
        """Write one file named ``name`` per day of ``table``; days already written are skipped."""
        written = 0
        days = []
        for day, part in split_by_day(table):
            directory = f"{self.events}/{day_dir(day)}"
            path = write_atomic(part, self.fs, directory, name, local=self.local)
            if path is not None:
                self._layouts[path] = True
                written += part.num_rows
                days.append(day)
        if days:
            self._close_written(days)
        return written

    def _close_written(self, days: list[date]) -> None:
        """Summarise the closed days written to, once records of today show they are over.

        A writer crossing midnight thus summarises yesterday on its first write of
        today (on its own thread: no timer). Backfills of old days summarise
        nothing until something writes today's records, :meth:`close_days` runs or
        a read asks for them. Never raises: the records are stored either way.
        """
        today = datetime.now(UTC).date()
        with self._touched_lock:
            self._touched.update(day for day in days if day < today)
            if today not in days or (not self._touched and self._checked == today):
                return
            due = sorted(self._touched)
            if self._checked != today:
                self._checked = today
                due = sorted({*due, date.fromordinal(today.toordinal() - 1)})
            self._touched.clear()
        for day in due:
            try:
                self._history.close([day])
            except Exception as exc:  # a side job of a write that succeeded: never fail it
                logger.warning("could not summarise %s: %s", day, exc)

    # -- layout ------------------------------------------------------------------------

    def days(self) -> list[date]:
        """The days that have a partition, in order."""
        if self.objects:
            return objects.days_with_files(self.fs, self.events)
        infos = self.fs.get_file_info(pafs.FileSelector(self.events, allow_not_found=True))
        out: list[date] = []
        for info in infos:
            if info.type == pafs.FileType.Directory and info.base_name.startswith("date="):
                try:
                    out.append(date.fromisoformat(info.base_name[5:]))
                except ValueError:
                    continue
        return sorted(out)

    def partitions(self, *, rows: bool = True) -> pd.DataFrame:
        """One row per stored day: detail files, rows and bytes, summary kept and its bytes.

        Rows come from the Parquet footers (``rows=False`` skips reading them).
        See :mod:`perfnb.store.partitions`.
        """
        from perfnb.store.partitions import partitions

        return partitions(self, rows=rows)

    def files(self, start: TimeLike = None, end: TimeLike = None) -> list[str]:
        """The data files of the days overlapping ``[start, end)``, as filesystem paths."""
        first, last = to_utc(start, name="start"), to_utc(end, name="end")
        return [info.path for info in self._file_infos(first, last)]

    def _file_infos(self, first: datetime | None, last: datetime | None) -> list[pafs.FileInfo]:
        out: list[pafs.FileInfo] = []
        if self.objects:  # one listing of the bucket's keys rather than one per day
            listed = objects.listing_by_day(self.fs, self.events)
            for day in self._days_in(first, last, sorted(listed)):
                directory = f"{self.events}/{day_dir(day)}"
                out.extend(compaction.day_files(self.fs, directory, listed[day]))
            return out
        for day in self._days_in(first, last):
            out.extend(compaction.day_files(self.fs, f"{self.events}/{day_dir(day)}"))
        return out

    def _sizes(self, infos: Sequence[pafs.FileInfo]) -> dict[str, int] | None:
        """Sizes to read ``infos`` by, in object storage (elsewhere a stat costs nothing)."""
        return {i.path: int(i.size or 0) for i in infos} if self.objects else None

    def _days_in(
        self, first: datetime | None, last: datetime | None, days: list[date] | None = None
    ) -> list[date]:
        """The stored days (or ``days``) overlapping ``[first, last)``."""
        out = []
        for day in self.days() if days is None else days:
            if first is not None and day < first.date():
                continue
            if last is not None and datetime.combine(day, datetime.min.time(), UTC) >= last:
                continue
            out.append(day)
        return out

    # -- reading -----------------------------------------------------------------------

    def read(
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
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Records with ``start <= time < end`` as a DataFrame, in time order.

        Only the day partitions in range are opened. Load records (``run_id`` set)
        are left out unless ``include_load`` or ``run_ids`` asks for them.
        Categorical columns come back as pandas ``category``, integer columns as
        nullable ``Int16``/``Int32``/``Int64``, ``time`` as ``datetime64[us, UTC]``,
        the ``*_ms`` columns as ``float64`` (exact to the microsecond).

        >>> import tempfile
        >>> Store(tempfile.mkdtemp()).read("2026-01-01", "2026-01-02").shape[0]
        0
        """
        first, last = to_utc(start, name="start"), to_utc(end, name="end")
        filters = {
            "route": routes,
            "source": sources,
            "kind": kinds,
            "service": services,
            "run_id": run_ids,
        }
        options: dict[str, Any] = {
            "start": first,
            "end": last,
            "filters": filters,
            "include_load": include_load or run_ids is not None,
            "columns": check_columns(columns),
        }
        infos = self._file_infos(first, last)
        files = [info.path for info in infos]
        try:
            return read_files(self.fs, files, self._layouts, sizes=self._sizes(infos), **options)
        except (OSError, StoreError, pa.ArrowException):
            if not compaction.vanished(self.fs, files):
                raise
        # A compaction or retention removed files since the listing: read the days one
        # at a time, each listed again whenever a file goes from under its read.
        parts = [self._read_day(day, options) for day in self._days_in(first, last)]
        parts = [part for part in parts if part is not None]
        if not parts:
            return empty_frame(options["columns"])
        return table_to_frame(pa.concat_tables(parts), options["columns"])

    def _read_day(self, day: date, options: dict[str, Any]) -> pa.Table | None:
        directory = f"{self.events}/{day_dir(day)}"
        for attempt in range(_ATTEMPTS):
            infos = compaction.day_files(self.fs, directory)
            files = [i.path for i in infos]
            if not files:
                return None
            try:
                return read_table(
                    self.fs, files, self._layouts, sizes=self._sizes(infos), **options
                )
            except (OSError, StoreError, pa.ArrowException):
                if attempt + 1 < _ATTEMPTS and compaction.vanished(self.fs, files):
                    continue
                raise
        raise AssertionError("unreachable")

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run DuckDB SQL over the view ``events`` (all detail, with a ``date`` column).

        The ``*_ms`` columns are ``DOUBLE`` milliseconds in the view (``DECIMAL(18,3)``
        in the files).

        >>> import tempfile
        >>> Store(tempfile.mkdtemp()).sql("SELECT count(*) AS n FROM events")["n"][0]
        np.int64(0)
        """
        return self._query(query, params, None, None)

    def route_summary(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        daily: bool = False,
        sources: Sequence[str] | None = None,
        kinds: Sequence[str] | None = ("http",),
        services: Sequence[str] | None = None,
        include_load: bool = False,
    ) -> pd.DataFrame:
        """Per-route count, errors, error rate, p50/p90/p95/p99 and max of ``duration_ms``.

        An error is a record with an ``error_type`` or a status ≥ 500. ``daily``
        adds the ``date`` column and one row per route and day. Runs in DuckDB over
        the files of the days in range.

        >>> import tempfile
        >>> list(Store(tempfile.mkdtemp()).route_summary().columns)[:3]
        ['route', 'count', 'errors']
        """
        first, last = to_utc(start, name="start"), to_utc(end, name="end")
        where: list[str] = []
        params: list[Any] = []
        # The file list already holds whole days only; a bound on a midnight needs
        # no per-row test, and skipping it keeps the scan as lean as a raw query.
        if first is not None and first != _midnight(first):
            where.append("time >= ?")
            params.append(first)
        if last is not None and last != _midnight(last):
            where.append("time < ?")
            params.append(last)
        for column, values in (("source", sources), ("kind", kinds), ("service", services)):
            if values is not None:
                listed = [values] if isinstance(values, str) else list(values)
                where.append(f"{column} IN ({', '.join('?' * len(listed))})" if listed else "false")
                params.extend(listed)
        if not include_load:
            where.append("run_id IS NULL")
        return self._query(summary_sql(daily=daily, where=where), params, first, last)

    def _query(
        self, query: str, params: Any, first: datetime | None, last: datetime | None
    ) -> pd.DataFrame:
        for attempt in range(_ATTEMPTS):
            files = self.files(first, last)
            try:
                con = connect(self.fs, files, self._layouts, local=self.local)
                try:
                    frame: pd.DataFrame = con.execute(query, params).df()
                finally:
                    con.close()
            except (duckdb.Error, OSError, StoreError, pa.ArrowException) as exc:
                if attempt + 1 < _ATTEMPTS and compaction.vanished(self.fs, files):
                    continue  # a compaction or retention ran since the listing
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"sql: {exc}") from exc
                raise
            return frame
        raise AssertionError("unreachable")

    # -- maintenance -------------------------------------------------------------------

    def compact(self, day: date | str, *, force: bool = False) -> compaction.CompactResult:
        """Merge a closed day's files into one, atomically (see :mod:`perfnb.store.compact`).

        Today (UTC) is refused unless ``force``: writers may still be adding to it.
        """
        day = day_of(day)
        today = datetime.now(UTC).date()
        if day >= today and not force:
            raise StoreError(
                f"day: {day} is not closed yet (today is {today} UTC); pass force=True"
            )
        directory = f"{self.events}/{day_dir(day)}"
        return compaction.compact_day(
            self.fs, directory, day, self._names.next("c"), local=self.local
        )

    def _tidy(self) -> None:
        """Finish interrupted compactions and retention, drop temporary files crashes left."""
        selector = pafs.FileSelector(self.events, recursive=True, allow_not_found=True)
        stale = time.time() - _STALE_SECONDS
        for info in self.fs.get_file_info(selector):
            if info.base_name == compaction.INTENT:
                compaction.finish_interrupted(self.fs, info.path.rsplit("/", 1)[0])
            elif info.base_name.endswith(".tmp") and info.mtime.timestamp() < stale:
                self.fs.delete_file(info.path)
        retaining.finish_interrupted(self._history)
        daily = pafs.FileSelector(f"{self.root}/daily", recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(daily):
            if info.base_name.endswith(".tmp") and info.mtime.timestamp() < stale:
                self.fs.delete_file(info.path)

    # -- retention -------------------------------------------------------------------

    def retention(
        self,
        *,
        detail_days: int = retaining.DEFAULT_DETAIL_DAYS,
        summary_days: int = retaining.DEFAULT_SUMMARY_DAYS,
        today: date | None = None,
    ) -> retaining.RetentionPlan:
        """What retention would delete and compact; nothing changes until ``.apply()``.

        Keeps ``detail_days`` days of detail and ``summary_days`` days of summaries,
        today included. A day's detail goes only once its summary is written and
        verified; see :mod:`perfnb.store.retention` for the order that makes a kill
        at any point safe.

        >>> import tempfile
        >>> plan = Store(tempfile.mkdtemp()).retention(detail_days=7)
        >>> plan.bytes_freed, plan.apply().blocked
        (0, {})
        """
        return retaining.plan_retention(
            self, detail_days=detail_days, summary_days=summary_days, today=today
        )

    # -- export ------------------------------------------------------------------------

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        routes: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        services: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
        include_load: bool = False,
        columns: Sequence[str] | None = None,
        format: str | None = None,
        progress: Progress = None,
    ) -> ExportResult:
        """Write what :meth:`read` gives for these arguments to a CSV, JSON, JSONL or Parquet file.

        The format comes from the suffix unless ``format`` is given; the store is
        read a day at a time and the file written atomically. CSV cells that could
        run as spreadsheet formulas are neutralised. See :mod:`perfnb.store.export`.

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> Store(folder / "s").export(folder / "all.csv", progress=False).rows
        0
        """
        return export_store(
            self,
            path,
            start=start,
            end=end,
            routes=routes,
            sources=sources,
            kinds=kinds,
            services=services,
            run_ids=run_ids,
            include_load=include_load,
            columns=columns,
            format=format,
            progress=progress,
        )


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
