"""Reading a fleet directory: every process's journal, as whichever process answers finds it.

:class:`FleetReader` lists the journals (:class:`Journal`: a process's segments,
the first number still readable, the last written) from each segment's header and
last line, and reads a journal after a given number, finding its place by binary
search; :func:`housekeep` removes the journals of processes that ended long ago,
noting in ``_gone.jsonl`` what each held. The format is described in
:mod:`perfnb.server.fleet`, which writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from perfnb.schema import Record, record_from_json

__all__ = ["GONE_FILE", "SUFFIX", "FleetReader", "Journal", "dumps", "housekeep"]

#: The ending of journal segments.
SUFFIX: Final = ".jsonl"
GONE_FILE: Final = "_gone.jsonl"


def dumps(doc: object) -> str:
    """One compact JSON line of a journal."""
    return json.dumps(doc, separators=(",", ":"), default=str)


@dataclass
class Journal:
    """One process's journal as a reader finds it: its segments and what they hold."""

    boot: str
    instance: str
    host: str
    pid: int
    service: str
    segments: list[Path] = field(default_factory=list)
    first: int = 1  # the first number still readable
    last: int = 0  # the last number written so far (records or drops)
    ended: bool = False

    @property
    def alive(self) -> bool:
        """Whether its process still runs (on this host; other hosts' look alive)."""
        if self.ended:
            return False
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> dict[str, object]:
        """The journal as the feed's ``hello`` and ``/control`` list it."""
        return {
            "instance": self.instance,
            "boot": self.boot,
            "host": self.host,
            "pid": self.pid,
            "first": self.first,
            "last": self.last,
            "alive": self.alive,
        }


class FleetReader:
    """Every journal of a fleet directory, read by whichever process answers."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._headers: dict[Path, dict[str, Any]] = {}

    def journals(self) -> list[Journal]:
        """The journals present now, oldest process first."""
        found: dict[str, Journal] = {}
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return []
        for path in paths:
            if path.name.startswith(("_", ".")):
                continue
            header, last, ended = self._scan(path)
            if header is None:
                continue
            boot = str(header.get("boot", ""))
            journal = found.get(boot)
            if journal is None:
                journal = found[boot] = Journal(
                    boot=boot,
                    instance=str(header.get("instance", "")),
                    host=str(header.get("host", "")),
                    pid=int(header.get("pid", 0)),
                    service=str(header.get("service", "")),
                    first=int(header.get("first", 1)),
                )
            journal.segments.append(path)
            journal.last = max(journal.last, last)
            journal.ended = journal.ended or ended
        return sorted(found.values(), key=lambda j: (j.pid, j.boot))

    def gone(self) -> dict[str, int]:
        """Boot ids of removed journals and the last number each held."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (self.directory / GONE_FILE).read_text(encoding="utf-8").splitlines():
                doc = json.loads(line)
                out[str(doc["boot"])] = int(doc["last"])
        return out

    def _header(self, path: Path) -> dict[str, Any] | None:
        header = self._headers.get(path)
        if header is None:
            try:
                with open(path, "rb") as fh:
                    doc = json.loads(fh.readline())
            except (OSError, ValueError):
                return None
            if not isinstance(doc, dict) or doc.get("perfnb_journal") != 1:
                return None
            header = self._headers[path] = doc
        return header

    def _scan(self, path: Path) -> tuple[dict[str, Any] | None, int, bool]:
        """A segment's header, the last number it holds, and whether it ends its journal.

        Reads the header (once) and the segment's last complete line, never the whole
        segment: a feed opens often, and journals hold up to tens of MB.
        """
        header = self._header(path)
        if header is None:
            return None, 0, False
        last = int(header.get("first", 1)) - 1
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                step = 4096
                while True:
                    begin = max(0, size - step)
                    fh.seek(begin)
                    lines = fh.read(size - begin).split(b"\n")
                    # lines[-1] is b"" after a complete line, or a line being written
                    complete = lines[1:-1] if begin else lines[:-1]
                    if complete or begin == 0:
                        break
                    step *= 4
        except OSError:
            return None, 0, False
        for line in reversed(complete):
            try:
                number, is_end = _number_of(line + b"\n")
            except (ValueError, KeyError, IndexError):
                continue
            if is_end:
                # the end marker names the journal's last number
                return header, max(last, int(json.loads(line)["end"])), True
            if number is not None:
                return header, number, False
        return header, last, False

    def _seek(self, fh: Any, begin: int, target: int) -> int:
        """Where the first line numbered ``target`` or later starts (at ``begin`` or after).

        A binary search over the segment's lines (numbers grow along the file), so a
        resumed stream starts reading where it left off, not at the segment's start.
        """
        end = fh.seek(0, os.SEEK_END)
        low, high = begin, end
        while high - low > 8192:
            mid = (low + high) // 2
            fh.seek(mid)
            fh.readline()  # the rest of the line mid fell in
            start = fh.tell()
            line = fh.readline()
            if not line.endswith(b"\n"):
                high = mid
                continue
            number, is_end = _number_of(line)
            if is_end or number is None or number >= target:
                high = mid
            else:
                low = start
        return low

    def read(
        self, journal: Journal, *, after: int, limit: int, at: tuple[Path, int] | None = None
    ) -> tuple[list[tuple[str, Any]], tuple[Path, int] | None]:
        """What ``journal`` holds after number ``after``: at most ``limit`` records.

        Returns the events, in order, ``("records", (first, last, wire records))``
        and ``("dropped", (first, last))``, and where reading stopped, which the
        caller hands back as ``at`` to start the next read there instead of at the
        segment's start.
        """
        expected = after + 1
        taken = 0
        out: list[tuple[str, Any]] = []
        batch: list[dict[str, Any]] = []
        batch_first = 0
        position: tuple[Path, int] | None = at
        segments = journal.segments
        if at is not None and at[0] in segments:
            segments = segments[segments.index(at[0]) :]
        else:
            at = None
            # start in the last segment that begins at or before the number wanted
            starts = [int((self._header(p) or {}).get("first", 1)) for p in segments]
            index = max((i for i, first in enumerate(starts) if first <= expected), default=0)
            segments = segments[index:]
        for order, path in enumerate(segments):
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError:
                continue
            with fh:
                header = json.loads(fh.readline())
                seg_first = int(header.get("first", 1))
                if at is not None and at[0] == path:
                    fh.seek(at[1])
                elif order == 0 and expected > seg_first:
                    fh.seek(self._seek(fh, fh.tell(), expected))
                elif expected < seg_first:
                    # the segments that held these numbers were removed
                    if batch:
                        out.append(("records", (batch_first, expected - 1, batch)))
                        batch = []
                    out.append(("dropped", (expected, seg_first - 1)))
                    expected = seg_first
                while True:
                    line = fh.readline()
                    if not line.endswith(b"\n"):
                        break  # the end, or a line still being written
                    position = (path, fh.tell())
                    number, is_end = _number_of(line)
                    if is_end or number is None or number < expected:
                        continue
                    if line.startswith(b'{"s":'):
                        if not batch:
                            batch_first = number
                        batch.append(json.loads(line)["r"])
                        expected = number + 1
                        taken += 1
                        if taken >= limit:
                            out.append(("records", (batch_first, number, batch)))
                            return out, position
                    else:
                        first = int(json.loads(line)["d"][0])
                        if batch:
                            out.append(("records", (batch_first, expected - 1, batch)))
                            batch = []
                        out.append(("dropped", (max(first, expected), number)))
                        expected = number + 1
        if batch:
            out.append(("records", (batch_first, expected - 1, batch)))
        return out, position

    def tail(self, n: int) -> list[Record]:
        """About the ``n`` newest records of every journal, oldest first (for the snapshot)."""
        out: list[tuple[float, Record]] = []
        for journal in self.journals():
            if not journal.segments:
                continue
            path = journal.segments[-1]
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    size = fh.tell()
                    fh.seek(max(0, size - 400 * n))
                    lines = fh.read().split(b"\n")[-n - 1 :]
            except OSError:
                continue
            for line in lines:
                if not line.startswith(b'{"s"'):
                    continue
                try:
                    rec = record_from_json(json.loads(line)["r"])
                except Exception:
                    continue
                stamp = rec.get("time")
                out.append((stamp.timestamp() if isinstance(stamp, datetime) else 0.0, rec))
        out.sort(key=lambda pair: pair[0])
        return [rec for _, rec in out]


def _number_of(line: bytes) -> tuple[int | None, bool]:
    """The last number a journal line accounts for, and whether it is the end marker."""
    if line.startswith(b'{"s":'):
        end = line.index(b",", 5)
        return int(line[5:end]), False
    doc = json.loads(line)
    if "d" in doc:
        return int(doc["d"][1]), False
    if "end" in doc:
        return None, True
    return None, False


def housekeep(directory: Path, keep_dead_seconds: float) -> None:
    """Remove journals whose process ended more than ``keep_dead_seconds`` ago."""
    reader = FleetReader(directory)
    now = time.time()
    for journal in reader.journals():
        if journal.alive:
            continue
        try:
            newest = max(p.stat().st_mtime for p in journal.segments)
        except (OSError, ValueError):
            continue
        if now - newest < keep_dead_seconds:
            continue
        with open(directory / GONE_FILE, "a", encoding="utf-8") as fh:
            fh.write(
                dumps({"boot": journal.boot, "instance": journal.instance, "last": journal.last})
                + "\n"
            )
        for path in journal.segments:
            with contextlib.suppress(OSError):
                path.unlink()
