"""The buffered store writer: fast appends, durable from the moment they return.

An append checks the record and packs it as one fixed-width row into the append
log (see :mod:`perfnb.store.rows` and :mod:`perfnb.store.wal`) — nothing more.
Every ``flush_every`` records, or on the first append after ``flush_seconds``, the
writer *seals* its log segment and starts a new one, and a converter thread turns
the sealed segment into Parquet files named after it — decoding its rows in one
vectorised pass, sorting, encoding, compressing — then deletes it. That work runs
beside the appender, mostly outside the GIL, so it takes the second core instead
of the appender's time. At most two sealed segments wait for the converter; past
that an append waits (backpressure, never an unbounded queue).

A sealed segment stays on disk, locked, until its Parquet files exist, so a kill
at any point loses nothing acknowledged: the next ``Store`` open replays it.
There is no timer thread: an idle writer keeps its records in the log until the
next append, ``flush()`` or ``close()``.

:meth:`StoreWriter.commit` is the feed followers' append: a batch and the feed's
resume mark in one frame (see :mod:`perfnb.store.resume`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from perfnb._closing import Closing
from perfnb.errors import RecordError, StoreError
from perfnb.schema import Record
from perfnb.store.frames import table_from_frame
from perfnb.store.parquet import Names
from perfnb.store.resume import ResumePoints, marked_payload
from perfnb.store.rows import ROW_BYTES, ROWS_START, TABLE, Encoder, Memory, decode
from perfnb.store.wal import SEGMENT_BYTES, Segment, SegmentFull, WriteTable, decode_segment

__all__ = ["StoreWriter"]

logger = logging.getLogger("perfnb.store")

#: Sealed segments that may wait for the converter before appends wait.
_DEPTH = 2


def _convert(segment: Segment, write: WriteTable, points: ResumePoints) -> int:
    """Write a sealed segment's records as Parquet, save its resume marks, delete it."""
    table = decode_segment(segment.map, rows=segment.rows)
    if table.num_rows:
        write(table, segment.path.stem)
    points.save(segment.marks)
    segment.close(delete=True)
    return int(table.num_rows)


class _Converter:
    """Turns sealed segments into Parquet, on its own thread or (``background=False``) inline.

    A segment whose conversion fails is kept, open and locked, in :attr:`failed`
    for the writer to retry; its records stay safe in the log meanwhile.
    """

    def __init__(self, write: WriteTable, points: ResumePoints, *, background: bool) -> None:
        self._write = write
        self._points = points
        self._background = background
        self._queue: queue.Queue[Segment | None] = queue.Queue(maxsize=_DEPTH)
        self._state = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None
        self.failed: list[Segment] = []
        #: Records written to Parquet so far.
        self.written = 0

    def submit(self, segment: Segment) -> None:
        if not self._background:
            self._convert(segment, raise_errors=True)
            return
        with self._state:
            self._busy += 1
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="perfnb-store-converter", daemon=True
            )
            self._thread.start()
        self._queue.put(segment)

    def add(self, count: int) -> None:
        with self._state:
            self.written += count

    def _convert(self, segment: Segment, *, raise_errors: bool) -> None:
        try:
            count = _convert(segment, self._write, self._points)
        except Exception as exc:
            with self._state:
                self.failed.append(segment)
            if raise_errors:
                raise
            logger.error("perfnb store: could not write %s as Parquet: %s", segment.path, exc)
            return
        self.add(count)

    def _run(self) -> None:
        while True:
            segment = self._queue.get()
            if segment is None:
                return
            try:
                self._convert(segment, raise_errors=False)
            finally:
                with self._state:
                    self._busy -= 1
                    self._state.notify_all()

    def drain(self) -> None:
        """Wait until every submitted segment is converted (or failed)."""
        with self._state:
            self._state.wait_for(lambda: self._busy == 0)

    def retry(self) -> None:
        """Convert the failed segments again, inline; raises the first error."""
        with self._state:
            failed, self.failed = self.failed, []
        for index, segment in enumerate(failed):
            try:
                self.add(_convert(segment, self._write, self._points))
            except BaseException:
                with self._state:
                    self.failed[:0] = failed[index:]
                raise

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()


class StoreWriter(Closing):
    """A buffered, durable sink for one :class:`~perfnb.store.Store`; thread-safe.

    Made by :meth:`Store.writer`. ``append`` is a :data:`~perfnb.schema.Sink`.
    With ``background=False`` the Parquet files are written by the appending thread.
    ``segment_bytes`` sizes each append-log segment (a sparse file).

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
        background: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise StoreError(f"flush_every: got {flush_every!r}; expected an integer ≥ 1")
        if not flush_seconds > 0:
            raise StoreError(f"flush_seconds: got {flush_seconds!r}; expected seconds > 0")
        self._write = write
        self._log_dir = log_dir
        self._flush_every = flush_every
        self._segment_bytes = segment_bytes
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._encoder = Encoder()
        self._find = self._encoder.find
        self._names = Names()
        self._segment: Segment | None = None
        self._deadline = float("inf")
        self._closed = False
        #: Where the feeds recorded through :meth:`commit` stand.
        self.resume_points = ResumePoints(log_dir)
        self._batch_encoder = Encoder()
        self._batch_lock = threading.Lock()
        self._converter = _Converter(write, self.resume_points, background=background)
        # An abandoned writer's converter thread ends when the writer is collected.
        weakref.finalize(self, self._converter.stop)

    @property
    def written(self) -> int:
        """Records written to Parquet so far (once the conversions under way finish)."""
        self._converter.drain()
        return self._converter.written

    # -- appending ---------------------------------------------------------------------

    def append(self, record: Record | Mapping[str, Any]) -> None:
        """Add one record; when this returns the record survives a kill of the process.

        Raises :class:`~perfnb.errors.RecordError` naming the column of a bad record.
        """
        # The body of _add, inlined: this is the writer's hot path and a method
        # call is a tenth of its budget. acquire/release in try/finally cost half
        # of `with lock:` on CPython 3.11.
        self._acquire()
        try:
            segment = self._segment or self._fresh()
            try:
                shape = self._find(tuple(record))
                done = shape is not None and shape.put(record, segment.map, segment.front)
            except (SegmentFull, TypeError):  # TypeError: not a mapping at all
                done = False
            if done:
                segment.front += ROW_BYTES
            else:
                segment = self._put_slow(record)
            # Past `last` the segment is full or holds `flush_every` records.
            if segment.front > segment.last or self._clock() >= self._deadline:
                self._seal()
        finally:
            self._release()

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
            if self._clock() >= self._deadline:
                self._seal()
        return count

    def _add(self, record: Mapping[str, Any]) -> None:
        segment = self._segment or self._fresh()
        try:
            shape = self._find(tuple(record))
            done = shape is not None and shape.put(record, segment.map, segment.front)
        except (SegmentFull, TypeError):  # TypeError: not a mapping at all
            done = False
        if done:
            segment.front += ROW_BYTES
        else:
            segment = self._put_slow(record)
        if segment.front > segment.last:
            self._seal()

    def _put_slow(self, record: Mapping[str, Any]) -> Segment:
        """Check and pack through the generic path; a full segment is sealed and retried."""
        for attempt in range(2):
            segment = self._segment or self._fresh()
            try:
                self._encoder.put(record, segment)
                return segment
            except SegmentFull:
                if attempt:
                    break
                self._seal()
        raise StoreError("a record does not fit in an empty log segment")

    def _extend_table(self, table: pa.Table) -> int:
        rows = int(table.num_rows)
        with self._lock:
            if self._closed:
                self._refuse()
            if rows >= self._flush_every:
                # Big batches go straight to Parquet: durable on return, no log needed.
                self._seal()
                self._converter.add(self._write(table, self._names.next("b")))
                return rows
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as stream:
                stream.write_table(table)
            payload = sink.getvalue()
            for attempt in range(2):
                segment = self._segment or self._fresh()
                try:
                    segment.add_table(TABLE, payload, rows)
                    break
                except SegmentFull:
                    if attempt or not segment.records:
                        self._converter.add(self._write(table, self._names.next("b")))
                        return rows
                    self._seal()
            if segment.records >= self._flush_every or self._clock() >= self._deadline:
                self._seal()
        return rows

    def commit(
        self, records: Sequence[Mapping[str, Any]], *, key: str, mark: Mapping[str, Any]
    ) -> int:
        """Add a feed's batch and its resume ``mark`` as one frame: a kill keeps both or neither.

        ``key`` names the feed; ``mark`` is JSON (the feed's resume token and
        counts). The mark is stored with ``key`` and ``n`` added, and read back
        with ``resume_points.get(key)``. Records that fail the schema are left
        out; returns how many were kept. An empty batch commits the mark alone.
        """
        with self._batch_lock:
            # One encoder for every batch: its record shapes are compiled once.
            log = Memory(ROWS_START + ROW_BYTES * (len(records) + 1))
            encoder = self._batch_encoder
            encoder.attach(log)
            for record in records:
                log.reserve()
                try:
                    encoder.put(record, log)
                except (RecordError, TypeError):
                    continue
            table = decode(log)
        rows = int(table.num_rows)
        with self._lock:
            if self._closed:
                self._refuse()
            points = self.resume_points
            full = {**mark, "key": key, "n": points.next_n(key)}
            payload = marked_payload(table, full)
            for attempt in range(2):
                segment = self._segment or self._fresh()
                try:
                    segment.add_table(TABLE, payload, rows)
                    break
                except SegmentFull:
                    if attempt or not (segment.records or segment.marks):
                        raise StoreError(
                            f"a batch of {rows} records does not fit in an empty log segment"
                        ) from None
                    self._seal()
            segment.marks[key] = full
            points.committed(full)
            if segment.records >= self._flush_every or self._clock() >= self._deadline:
                # The batch is committed: a failing conversion must not make the
                # caller think otherwise (and send it again); the log keeps it.
                try:
                    self._seal()
                except Exception as exc:
                    logger.error("perfnb store: converting a full log segment failed: %s", exc)
        return rows

    def _fresh(self) -> Segment:
        """A new current segment (sealing a full one first)."""
        if self._segment is not None:
            self._seal()
        if self._closed:
            self._refuse()
        segment = Segment(
            self._log_dir,
            self._names.next("w"),
            size=self._segment_bytes,
            records=self._flush_every,
        )
        try:
            self._encoder.attach(segment)
        except BaseException:
            segment.close(delete=True)
            raise
        self._segment = segment
        self._deadline = self._clock() + self._flush_seconds
        return segment

    # -- flushing ----------------------------------------------------------------------

    def _seal(self) -> None:
        """Hand the current segment to the converter; retry earlier failures first."""
        segment, self._segment = self._segment, None
        self._deadline = float("inf")
        if segment is not None:
            if segment.records or segment.marks:
                self._converter.submit(segment)
            else:
                segment.close(delete=True)
        if self._converter.failed:
            self._converter.retry()

    def flush(self) -> int:
        """Write the buffered records as Parquet now; returns how many were written."""
        with self._lock:
            before = self._converter.written
            self._seal()
            self._converter.drain()
            self._converter.retry()
            return self._converter.written - before

    def close(self) -> None:
        """Flush and release the log; later appends raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._seal()
            self._converter.drain()
            self._converter.retry()
            self._converter.stop()
            self._closed = True

    def _refuse(self) -> None:
        raise StoreError("this StoreWriter is closed; make a new one with Store.writer()")
