"""Resume points: how far a followed feed is stored, kept durable with its records.

A feed follower (``perfnb record``, :func:`perfnb.connect` with a store) hands the
writer each batch together with a *mark*: a small JSON object naming the feed
(``key``) and saying where the feed stands once the batch is stored (the feed's
resume token and its running counts). :meth:`StoreWriter.commit` puts the batch
and its mark into one append-log frame — an Arrow IPC stream whose record batch
carries the mark as custom metadata — so a kill at any instant leaves either both
or neither: a restart resumes exactly after the last batch it kept.

Once a segment's records are Parquet (written by the writer's converter, or by
recovery when the store is next opened), its marks move to one JSON file per feed
under ``<wal_dir>/feeds/``, *before* the segment is deleted. The folder sits in
the append log's own folder (``<root>/_wal`` for a local store), which readers of
the store skip like every ``_`` folder. Each mark carries ``n``, a count that
grows with every commit of its feed; a file is only ever replaced by a mark with a
larger ``n``, so segments converted out of order never move a feed backwards.

>>> import tempfile, pathlib
>>> points = ResumePoints(pathlib.Path(tempfile.mkdtemp()))
>>> points.save({"f": {"key": "f", "n": 2, "token": "b"}})
>>> points.save({"f": {"key": "f", "n": 1, "token": "a"}})  # older: ignored
>>> points.get("f")["token"]
'b'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from perfnb.errors import StoreError

__all__ = ["MARK_METADATA", "Claim", "ResumePoints", "mark_of", "marked_payload"]

#: The custom-metadata key of a record batch that carries a mark.
MARK_METADATA: Final = "perfnb.resume"
#: The folder of resume points inside the append log's folder.
FOLDER: Final = "feeds"

Mark = dict[str, Any]


def marked_payload(table: pa.Table, mark: Mapping[str, Any]) -> pa.Buffer:
    """``table`` as one Arrow IPC stream whose single batch carries ``mark``."""
    text = json.dumps(mark, separators=(",", ":"), sort_keys=True)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        batch = table.combine_chunks().to_batches()
        whole = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
        stream.write_batch(whole, custom_metadata={MARK_METADATA: text})
    return sink.getvalue()


def mark_of(payload: Any) -> Mark | None:
    """The mark of a table frame's payload, or ``None`` when it carries none."""
    reader = pa.ipc.open_stream(payload)
    try:
        _, metadata = reader.read_next_batch_with_custom_metadata()
    except StopIteration:
        return None
    if metadata is None:
        return None
    raw = metadata.get(MARK_METADATA.encode())
    if raw is None:
        return None
    mark = json.loads(raw)
    if not isinstance(mark, dict) or not isinstance(mark.get("key"), str):
        return None
    return mark


def latest(marks: Mapping[str, Mark], mark: Mark) -> dict[str, Mark]:
    """``marks`` with ``mark`` in place of its feed's, if it is newer."""
    out = dict(marks)
    held = out.get(mark["key"])
    if held is None or _n(mark) > _n(held):
        out[mark["key"]] = mark
    return out


def _n(mark: Mapping[str, Any]) -> int:
    n = mark.get("n")
    return n if isinstance(n, int) else -1


class Claim:
    """An exclusive hold on one feed of one store; see :meth:`ResumePoints.claim`."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        """Let another follower take the feed. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class ResumePoints:
    """The resume points of the feeds recorded into one store, one JSON file per feed.

    ``directory`` is the append log's folder; the files live in its ``feeds/``.
    Thread-safe; several processes may save at once (a lock file orders them).
    """

    def __init__(self, log_dir: Path) -> None:
        self.directory = log_dir / FOLDER
        self._lock = threading.Lock()
        # Marks committed to the log by this process, newest per feed: fresher
        # than the files, which follow only once a segment is Parquet.
        self._committed: dict[str, Mark] = {}

    def path(self, key: str) -> Path:
        """The file of feed ``key``."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.directory / f"{digest}.json"

    def get(self, key: str) -> Mark | None:
        """The newest mark of ``key``: committed by this process, else stored.

        A feed has one follower at a time (see :meth:`claim`), so a mark this
        process committed is never older than the file.
        """
        with self._lock:
            held = self._committed.get(key)
        return held if held is not None else self._load(key)

    def next_n(self, key: str) -> int:
        """The ``n`` of the next mark of ``key``."""
        current = self.get(key)
        return 0 if current is None else _n(current) + 1

    def committed(self, mark: Mark) -> None:
        """Note a mark just committed to the append log."""
        with self._lock:
            self._committed = latest(self._committed, mark)

    def save(self, marks: Mapping[str, Mark]) -> None:
        """Store each mark whose ``n`` is newer than its feed's file (atomic per file)."""
        if not marks:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            for key, mark in marks.items():
                stored = self._load(key)
                if stored is not None and _n(stored) >= _n(mark):
                    continue
                final = self.path(key)
                temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
                temp.write_text(json.dumps(mark, indent=1, sort_keys=True) + "\n")
                os.replace(temp, final)

    def claim(self, key: str) -> Claim:
        """Hold feed ``key`` for one follower; raises :class:`StoreError` if another holds it.

        The hold ends with :meth:`Claim.release` or with the process (even SIGKILL).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key).with_suffix(".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"feed {key}: another follower records it into this store already"
            raise StoreError(msg) from None
        return Claim(fd)

    def _load(self, key: str) -> Mark | None:
        try:
            text = self.path(key).read_text()
        except FileNotFoundError:
            return None
        try:
            mark = json.loads(text)
        except ValueError as exc:
            msg = f"resume point {self.path(key)} is not JSON: {exc}"
            raise StoreError(msg) from exc
        return mark if isinstance(mark, dict) else None

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
