"""The append log: what a store writer has acknowledged but not yet written as Parquet.

A log *segment* is a local file mapped into memory. Appending a record packs its
row into the mapping — no system call — and the kernel owns those pages from then
on, so they survive the process being killed (SIGKILL included); only a crash of
the whole machine can lose them, like any write that was not synced. One segment
covers exactly one flush of the writer: the flush writes the segment's records as
Parquet files named after the segment, then deletes it.

A segment of ``size`` bytes holds, in this order:

* the 16-byte :data:`MAGIC` (format and version);
* rows (see :mod:`perfnb.store.rows`) from byte 16 upwards, all of one width, each
  committed by its tag, which is written last;
* frames from the end downwards: the payload, then an 8-byte header (payload
  length, id, type) whose type is written last. Frames carry what rows refer to —
  shapes, strings, tags maps — and whole tables (DataFrame batches).

Each area ends at the first zero tag or zero type, which is exactly what a process
killed half-way through an append leaves; at least :data:`GAP` zero bytes always
separate the two areas. A row is packed only after the frames it refers to.

A table frame may carry a feed's resume *mark* (see :mod:`perfnb.store.resume`):
the mark and the records are one frame, committed together. Whoever writes a
segment's records as Parquet — the writer's converter or :func:`recover` — saves
its marks before deleting it.

A live segment is held with an exclusive ``flock``; recovery skips segments whose
lock it cannot take, so a store opened by a second process never replays the log
of a writer that is still running — nor a sealed segment that a writer's converter
is still turning into Parquet.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from perfnb.errors import StoreError
from perfnb.store.layout import sort_by_time
from perfnb.store.resume import Mark, ResumePoints, latest, mark_of
from perfnb.store.rows import (
    FRAME_TYPES,
    ROW_BYTES,
    ROW_DTYPE,
    ROWS_START,
    TABLE,
    collect,
    table_from_rows,
)

__all__ = [
    "MAGIC",
    "SEGMENT_BYTES",
    "Segment",
    "SegmentFull",
    "WriteTable",
    "decode_segment",
    "open_for_replay",
    "recover",
    "segment_marks",
]

logger = logging.getLogger("perfnb.store")

#: Writes a table as Parquet files named ``name`` (one per day); returns the rows written.
WriteTable = Callable[[pa.Table, str], int]

MAGIC: Final = b"perfnb-log\x00\x00\x00\x00\x00\x02"
HEADER: Final = struct.Struct("<IHH")  # payload length, id, type
_pack_head: Final = struct.Struct("<IH").pack_into
_pack_type: Final = struct.Struct("<H").pack_into
#: Zero bytes always left between the rows and the frames.
GAP: Final = HEADER.size
#: Segments are sparse files: only the pages written use disk.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
SUFFIX: Final = ".log"
#: A ".new" segment older than this was left by a process killed while creating it.
_PENDING_STALE_SECONDS: Final = 60.0


class SegmentFull(Exception):
    """The next frame does not fit; the writer seals the segment and starts a new one."""


class Segment:
    """One append-log segment: created under a temporary name, locked, then renamed.

    The :class:`~perfnb.store.rows.Log` an :class:`~perfnb.store.rows.Encoder` packs
    rows into: ``front`` is where the next row goes, ``last`` the last offset a row
    may start at — the segment is full past it, for want of room or because it holds
    ``records`` (rows and rows of tables) already.
    """

    __slots__ = ("_fd", "_limit", "back", "front", "last", "map", "marks", "path", "table_rows")

    def __init__(
        self, directory: Path, name: str, *, size: int = SEGMENT_BYTES, records: int = 2**62
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}{SUFFIX}"
        # Created under a name recovery ignores, and renamed only once locked, so
        # another process's recovery never takes (and deletes) a segment in use.
        pending = directory / f"{name}.new"
        self._fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(self._fd, size)
            self.map = mmap.mmap(self._fd, size)
            self.map[: len(MAGIC)] = MAGIC
            os.rename(pending, self.path)
        except BaseException:
            os.close(self._fd)
            pending.unlink(missing_ok=True)
            raise
        self._limit = records
        self.front = ROWS_START
        #: Rows that came as whole tables (TABLE frames).
        self.table_rows = 0
        #: The newest resume mark of each feed committed into this segment.
        self.marks: dict[str, Mark] = {}
        self.back = size
        self.last = 0
        self._update()

    def _update(self) -> None:
        by_room = self.back - GAP - ROW_BYTES
        by_count = ROWS_START + (self._limit - self.table_rows - 1) * ROW_BYTES
        self.last = min(by_room, by_count)

    def frame(self, kind: int, ident: int, payload: Any) -> None:
        """Add a frame below the others; raises :class:`SegmentFull` when it does not fit.

        Room for one more row is always kept: the row being packed when a string of
        it is framed.
        """
        size = len(payload)
        start = self.back - HEADER.size - size
        if start - GAP < self.front + ROW_BYTES:
            raise SegmentFull
        self.map[start : start + size] = payload
        _pack_head(self.map, start + size, size, ident)
        _pack_type(self.map, start + size + 6, kind)
        self.back = start
        self._update()

    def add_table(self, kind: int, payload: Any, rows: int) -> None:
        """Frame a whole table of ``rows`` records (see :meth:`frame`)."""
        self.frame(kind, 0, payload)
        self.table_rows += rows
        self._update()

    @property
    def rows(self) -> int:
        """Rows committed (not counting tables)."""
        return (self.front - ROWS_START) // ROW_BYTES

    @property
    def records(self) -> int:
        return self.rows + self.table_rows

    def close(self, *, delete: bool) -> None:
        """Unmap and unlock; ``delete`` once its records are stored as Parquet."""
        self.map.close()
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)


def _frames(data: Any) -> tuple[list[tuple[int, int, bytes]], int]:
    """The frames of a segment, oldest first, and where the frame area begins."""
    frames = []
    pos = len(data)
    while pos - HEADER.size >= ROWS_START:
        size, ident, kind = HEADER.unpack_from(data, pos - HEADER.size)
        start = pos - HEADER.size - size
        if kind not in FRAME_TYPES or start < ROWS_START:
            break
        frames.append((kind, ident, data[start : pos - HEADER.size]))
        pos = start
    return frames, pos


def decode_segment(data: Any, *, rows: int | None = None) -> pa.Table:
    """The records of a segment (an mmap) as one time-sorted table of the store's form.

    ``rows`` is the number of committed rows when known (the writer's own segment);
    otherwise rows are read up to the first zero tag.
    """
    if data[: len(MAGIC)] != MAGIC:
        raise StoreError("not an append-log segment of this version of perfnb")
    frames, back = _frames(data)
    shapes: dict[int, tuple[str, ...]] = {}
    strings: list[str] = []
    tags: list[dict[str, str]] = []
    tables: list[pa.Table] = []
    for kind, ident, payload in frames:
        collect(kind, ident, payload, shapes, strings, tags, tables)
    capacity = max(0, (back - GAP - ROWS_START) // ROW_BYTES)
    view = np.frombuffer(data, dtype=ROW_DTYPE, count=capacity, offset=ROWS_START)
    try:
        if rows is None:
            zeros = np.flatnonzero(view["tag"] == 0)
            rows = int(zeros[0]) if len(zeros) else capacity
        copied = view[: min(rows, capacity)].copy()
    finally:
        del view  # the mmap cannot close while a view of it lives
    return sort_by_time(table_from_rows(copied, shapes, strings, tags, tables))


def segment_marks(data: Any) -> dict[str, Mark]:
    """The newest resume mark of each feed in a segment (an mmap)."""
    marks: dict[str, Mark] = {}
    for kind, _, payload in _frames(data)[0]:
        if kind == TABLE:
            mark = mark_of(payload)
            if mark is not None:
                marks = latest(marks, mark)
    return marks


def open_for_replay(path: Path) -> int | None:
    """An fd locked exclusively on ``path``, or ``None`` when a live writer holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def recover(directory: Path, write: WriteTable, *, label: str) -> int:
    """Replay the segments no live writer holds; returns the records written.

    A segment's records go to Parquet files named after the segment, and a day
    whose file already exists is skipped: a writer killed after writing its files
    but before deleting its segment is replayed without duplicating a row. Its
    resume marks are saved next, then it is deleted. A segment that cannot be
    read is logged and left where it is.
    """
    if not directory.is_dir():
        return 0
    # A ".new" segment lives for microseconds between its creation and its lock; only
    # one left behind by a process killed in between is removed, never one being born.
    stale = time.time() - _PENDING_STALE_SECONDS
    for pending in directory.glob("*.new"):
        try:
            if pending.stat().st_mtime > stale:
                continue
        except FileNotFoundError:
            continue
        fd = open_for_replay(pending)
        if fd is not None:
            pending.unlink(missing_ok=True)
            os.close(fd)
    total = segments = 0
    points = ResumePoints(directory)
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        fd = open_for_replay(path)
        if fd is None:
            continue  # a live writer holds it
        try:
            table, marks = _replay(fd)
            total += write(table, path.stem)
            points.save(marks)
            path.unlink(missing_ok=True)
            segments += 1
        except (OSError, StoreError, ValueError, pa.ArrowException) as exc:
            logger.error("perfnb store %s: could not replay %s: %s", label, path, exc)
        finally:
            os.close(fd)
    if total:
        logger.warning(
            "perfnb store %s: recovered %d records from %d append-log segment(s)",
            label,
            total,
            segments,
        )
    return total


def _replay(fd: int) -> tuple[pa.Table, dict[str, Mark]]:
    size = os.fstat(fd).st_size
    if size == 0:
        return table_from_rows(np.zeros(0, ROW_DTYPE), {}, [], []), {}
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
        return decode_segment(data), segment_marks(data)
