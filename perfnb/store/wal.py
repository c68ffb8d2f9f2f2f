"""The append log: what a store writer has acknowledged but not yet written as Parquet.

A log *segment* is a local file mapped into memory. Appending a record copies
its bytes into the mapping — no system call — and the kernel owns those pages
from then on, so they survive the process being killed (SIGKILL included); only
a crash of the whole machine can lose them, like any write that was not synced.
One segment covers exactly one flush of the writer: the flush writes the
segment's records as Parquet files named after the segment, then deletes it.

A frame is an 8-byte header (payload length, frame type, shape id) followed by
the payload. The payload is copied first and the header last, so a process
killed half-way through an append leaves a zero header: the end of the log.

Frame types:

* ``SHAPE`` — a marshalled tuple of column names; later rows refer to it by id.
* ``ROW`` — a marshalled row (see :mod:`perfnb.store.rows`) of that shape.
* ``TABLE`` — an Arrow IPC stream of already validated records (batches).

A live segment is held with an exclusive ``flock``; recovery skips segments
whose lock it cannot take, so a store opened by a second process never replays
the log of a writer that is still running.
"""

from __future__ import annotations

import fcntl
import logging
import marshal
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from perfnb.errors import StoreError
from perfnb.store.rows import Rows, Shape, sort_by_time

__all__ = [
    "ROW",
    "SHAPE",
    "TABLE",
    "Segment",
    "WriteTable",
    "open_for_replay",
    "read_frames",
    "recover",
]

logger = logging.getLogger("perfnb.store")

#: Writes a table as Parquet files named ``name`` (one per day); returns the rows written.
WriteTable = Callable[[pa.Table, str], int]

SHAPE: Final = 1
ROW: Final = 2
TABLE: Final = 3

HEADER: Final = struct.Struct("<IHH")
_pack_header: Final = HEADER.pack_into
#: Segments are sparse files: only the pages written use disk.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
SUFFIX: Final = ".log"


class SegmentFull(Exception):
    """The next frame does not fit; the writer flushes and starts a new segment."""


class Segment:
    """One append-log segment, created under a temporary name, locked, then renamed."""

    def __init__(self, directory: Path, name: str, *, size: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}{SUFFIX}"
        # Created under a name recovery ignores, and renamed only once locked, so
        # another process's recovery never takes (and deletes) a segment in use.
        pending = directory / f"{name}.new"
        self._fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
            os.rename(pending, self.path)
        except BaseException:
            os.close(self._fd)
            pending.unlink(missing_ok=True)
            raise
        self._limit = size - HEADER.size  # a zero header always ends the segment
        self._pos = 0

    def write(self, kind: int, shape: int, payload: bytes) -> None:
        """Append one frame; raises :class:`SegmentFull` when it does not fit."""
        start = self._pos
        size = len(payload)
        end = start + 8 + size
        if end > self._limit:
            raise SegmentFull
        self._map[start + 8 : end] = payload
        _pack_header(self._map, start, size, kind, shape)
        self._pos = end

    @property
    def empty(self) -> bool:
        return self._pos == 0

    def close(self, *, delete: bool) -> None:
        """Unmap and unlock; ``delete`` once its records are stored as Parquet."""
        self._map.close()
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)


def read_frames(data: bytes | mmap.mmap) -> Iterator[tuple[int, int, Any]]:
    """Decode frames until the first zero or damaged header: ``(type, shape, value)``."""
    pos = 0
    limit = len(data)
    while pos + HEADER.size <= limit:
        length, kind, shape = HEADER.unpack_from(data, pos)
        body = pos + HEADER.size
        if kind not in (SHAPE, ROW, TABLE) or body + length > limit:
            return
        payload = data[body : body + length]
        try:
            if kind == TABLE:
                value: Any = pa.ipc.open_stream(payload).read_all()
            else:
                value = marshal.loads(payload)
        except (ValueError, EOFError, TypeError, pa.ArrowInvalid):
            return
        yield kind, shape, value
        pos = body + length


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
    but before deleting its segment is replayed without duplicating a row.
    """
    if not directory.is_dir():
        return 0
    for pending in directory.glob("*.new"):
        fd = open_for_replay(pending)
        if fd is not None:
            pending.unlink(missing_ok=True)
            os.close(fd)
    total = segments = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        fd = open_for_replay(path)
        if fd is None:
            continue  # a live writer holds it
        try:
            total += write(_replay(fd), path.stem)
            path.unlink(missing_ok=True)
            segments += 1
        except (OSError, StoreError) as exc:
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


def _replay(fd: int) -> pa.Table:
    size = os.fstat(fd).st_size
    rows = Rows()
    if size == 0:
        return rows.take()
    shapes: dict[int, Shape | None] = {}
    tables: list[pa.Table] = []
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
        for kind, shape_id, value in read_frames(data):
            if kind == SHAPE:
                shapes[shape_id] = rows.shape(tuple(value))
            elif kind == ROW and (shape := shapes.get(shape_id)) is not None:
                shape.rows.append(tuple(value))
            elif kind == TABLE:
                tables.append(value)
    tables = [t for t in (*tables, rows.take()) if t.num_rows]
    return sort_by_time(pa.concat_tables(tables)) if tables else Rows().take()
