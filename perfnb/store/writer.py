"""The buffered store writer: fast appends, durable from the moment they return.

Each record is checked (see :mod:`perfnb.store.rows`), copied into the append
log (see :mod:`perfnb.store.wal`) and buffered; every ``flush_every`` records,
or on the first append after ``flush_seconds``, the buffer becomes Parquet
files named after the log segment and the segment is deleted. There is no timer
thread: an idle writer keeps its records in the log until the next append,
``flush()`` or ``close()`` — or until the next ``Store`` open replays them.
"""

from __future__ import annotations

import marshal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa

from perfnb.errors import RecordError, StoreError
from perfnb.schema import Record
from perfnb.store.frames import table_from_frame
from perfnb.store.parquet import Names
from perfnb.store.rows import Rows, sort_by_time
from perfnb.store.wal import ROW, SHAPE, TABLE, Segment, SegmentFull, WriteTable

__all__ = ["StoreWriter"]

_dumps = marshal.dumps


class StoreWriter:
    """A buffered, durable sink for one :class:`~perfnb.store.Store`; thread-safe.

    Made by :meth:`Store.writer`. ``append`` is a :data:`~perfnb.schema.Sink`.

    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> from perfnb.store import Store
    >>> with Store(tempfile.mkdtemp()).writer(flush_every=1000) as writer:
    ...     writer.append({"time": datetime(2026, 1, 1, tzinfo=timezone.utc),
    ...                    "source": "server", "kind": "http", "duration_ms": 3.5})
    >>> writer.written
    1
    """

    def __init__(
        self,
        write: WriteTable,
        log_dir: Path,
        *,
        flush_every: int = 50_000,
        flush_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_every < 1:
            raise StoreError(f"flush_every: got {flush_every!r}; expected an integer ≥ 1")
        if not flush_seconds > 0:
            raise StoreError(f"flush_seconds: got {flush_seconds!r}; expected seconds > 0")
        self._write = write
        self._log_dir = log_dir
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._rows = Rows()
        self._shape_get = self._rows._shapes.get
        self._tables: list[pa.Table] = []
        self._names = Names()
        self._segment: Segment | None = None
        self._declared = 0  # shapes declared in the current segment
        self._pending = 0
        self._deadline = float("inf")
        self._closed = False
        #: Records written to Parquet so far.
        self.written = 0

    # -- appending ---------------------------------------------------------------------

    def append(self, record: Record | Mapping[str, Any]) -> None:
        """Add one record; when this returns the record survives a kill of the process.

        Raises :class:`~perfnb.errors.RecordError` naming the column of a bad record.
        """
        # The body of _add, inlined: this is the writer's hot path and a method
        # call is a tenth of its budget.
        with self._lock:
            shape = self._shape_get(tuple(record))
            row = None if shape is None else shape.check(record)
            if shape is None or row is None:
                if self._closed:
                    self._refuse()
                shape, row = self._rows.add_slow(record)
            else:
                shape.rows.append(row)
            segment = self._segment
            if segment is None or shape.id >= self._declared:
                segment = self._prepare_segment()
            try:
                segment.write(ROW, shape.id, _dumps(row))
            except SegmentFull:
                self._flush_locked()  # the row is buffered: the flush stores it
                return
            self._pending += 1
            if self._pending >= self._flush_every or self._clock() >= self._deadline:
                self._flush_locked()

    def extend(self, records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Add many records (or a DataFrame, checked column by column); returns the count.

        A bad record raises :class:`~perfnb.errors.RecordError` naming its index; the
        records before it are kept.
        """
        if isinstance(records, pd.DataFrame):
            return self._extend_table(table_from_frame(records))
        count = 0
        with self._lock:
            for count, record in enumerate(records, 1):
                try:
                    self._add(record)
                except RecordError as exc:
                    raise RecordError(f"record {count - 1}: {exc}") from None
                if self._pending >= self._flush_every:
                    self._flush_locked()
            if self._clock() >= self._deadline:
                self._flush_locked()
        return count

    def _add(self, record: Mapping[str, Any]) -> None:
        shape = self._shape_get(tuple(record))
        row = None if shape is None else shape.check(record)
        if shape is None or row is None:
            if self._closed:
                self._refuse()
            shape, row = self._rows.add_slow(record)
        else:
            shape.rows.append(row)
        segment = self._segment
        if segment is None or shape.id >= self._declared:
            segment = self._prepare_segment()
        try:
            segment.write(ROW, shape.id, _dumps(row))
        except SegmentFull:
            self._flush_locked()  # the row is buffered: the flush stores it
            return
        self._pending += 1

    def _extend_table(self, table: pa.Table) -> int:
        with self._lock:
            if self._closed:
                self._refuse()
            if table.num_rows >= self._flush_every:
                # Big batches go straight to Parquet: durable on return, no log needed.
                self._flush_locked()
                self.written += self._write(table, self._names.next("b"))
                return int(table.num_rows)
            segment = self._segment or self._open_segment()
            self._tables.append(table)
            try:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as stream:
                    stream.write_table(table)
                segment.write(TABLE, 0, sink.getvalue().to_pybytes())
            except SegmentFull:
                self._flush_locked()
                return int(table.num_rows)
            self._pending += table.num_rows
            if self._pending >= self._flush_every or self._clock() >= self._deadline:
                self._flush_locked()
        return int(table.num_rows)

    def _open_segment(self) -> Segment:
        if self._closed:
            self._refuse()
        self._segment = Segment(self._log_dir, self._names.next("w"))
        self._declared = 0
        self._deadline = self._clock() + self._flush_seconds
        return self._segment

    def _prepare_segment(self) -> Segment:
        """The current segment (opened if need be) with every known shape declared."""
        segment = self._segment or self._open_segment()
        for shape in self._rows.shapes[self._declared :]:
            segment.write(SHAPE, shape.id, _dumps(shape.keys))
        self._declared = len(self._rows.shapes)
        return segment

    # -- flushing ----------------------------------------------------------------------

    def flush(self) -> int:
        """Write the buffered records as Parquet now; returns how many were written."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        segment = self._segment
        tables = [*self._tables, self._rows.take()]
        self._tables = []
        table = (
            pa.concat_tables(t for t in tables if t.num_rows)
            if any(t.num_rows for t in tables)
            else None
        )
        if table is not None:
            name = segment.path.stem if segment is not None else self._names.next("w")
            try:
                self._write(sort_by_time(table), name)
            except BaseException:
                self._tables = [table]  # kept, with its log segment, for the next flush
                raise
            self.written += table.num_rows
        if segment is not None:
            segment.close(delete=True)
        self._segment = None
        self._pending = 0
        self._deadline = float("inf")
        return 0 if table is None else int(table.num_rows)

    def close(self) -> None:
        """Flush and release the log; later appends raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._flush_locked()
            self._closed = True

    def _refuse(self) -> None:
        raise StoreError("this StoreWriter is closed; make a new one with Store.writer()")

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
