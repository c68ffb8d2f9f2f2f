"""Every worker process of one host, one view: the fleet directory.

A server that runs the app in several processes (``gunicorn -w N``, ``uvicorn
--workers N``, recycled workers) gives each process its own monitor, and a feed
request lands on whichever process the server picks. With a fleet directory
(``Monitor(fleet=DIR)`` or ``PERFNB_FLEET_DIR``; one folder per host, shared by
the app's processes) every process also appends its records to a journal of its
own in that folder, and whichever process answers the feed, the snapshot or
``/control`` reads every journal:

- ``<instance>.<part>.jsonl``: one journal segment. ``<instance>`` is
  ``<host>-<pid>-<boot>`` (a boot id drawn afresh in every process, also after
  a fork). The first line is a header ``{"perfnb_journal": 1, "instance",
  "boot", "host", "pid", "service", "part", "first"}``; then one line per
  record, ``{"s": seq, "r": wire record}``, in sequence order, and
  ``{"d": [first, last]}`` for numbers the ring overwrote before they were
  written (counted, never silent). A segment past ``segment_bytes`` is closed
  and the next begun; only the newest ``keep_segments`` of each instance are
  kept, and a reader that fell behind them is told exactly what it missed.
- ``_control.json``: the last control change (monitoring on or off, kinds,
  sampling) made through any process; every process applies it within one
  flush period.
- ``_gone.jsonl``: one line per journal removed after its process died and
  ``keep_dead_seconds`` passed: ``{"boot", "instance", "last"}``, so a late
  reader still counts what it can no longer read.

The writing happens on one daemon thread per process, every ``every`` seconds,
off the request path: a request still costs only the ring's lock-free append.
It is the design of prometheus_client's multiprocess mode (files per process in
a directory named by an environment variable, merged on read, dead processes'
files handled) applied to records instead of counters. The journal is not a
durable store: it lives as long as a recorder may take to come back.

>>> import tempfile
>>> from perfnb.server.monitor import Monitor
>>> with tempfile.TemporaryDirectory() as folder:
...     m = Monitor(fleet=folder)
...     m.record({"time": datetime.now(UTC), "source": "server", "kind": "http"})
...     _ = m.fleet.flush()
...     [(j.boot == m.boot, j.last) for j in FleetReader(folder).journals()]
...     m.close()
[(True, 1)]
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from perfnb.schema import Record, record_from_json, record_to_json

if TYPE_CHECKING:
    from perfnb.server.monitor import Monitor

__all__ = ["FleetJournal", "FleetReader", "Journal", "instance_name"]

log = logging.getLogger("perfnb.server")

_SUFFIX: Final = ".jsonl"
CONTROL_FILE: Final = "_control.json"
GONE_FILE: Final = "_gone.jsonl"
#: The environment variable naming a host's fleet directory.
FLEET_ENV: Final = "PERFNB_FLEET_DIR"


def instance_name(boot: str) -> str:
    """``<host>-<pid>-<boot>``: a process of the app, told apart from every other."""
    host = socket.gethostname().replace("-", "_").replace(".", "_")[:40] or "host"
    return f"{host}-{os.getpid()}-{boot}"


def _dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)


class FleetJournal:
    """This process's journal in a fleet directory, written by a daemon thread.

    The thread wakes every ``every`` seconds, writes what the monitor's ring holds
    beyond what it wrote last, applies a control change another process wrote,
    and every ``housekeep_every`` seconds removes the journals of processes that
    died more than ``keep_dead_seconds`` ago.
    """

    def __init__(
        self,
        monitor: Monitor,
        directory: str | os.PathLike[str],
        *,
        every: float = 0.05,
        segment_bytes: int = 16 << 20,
        keep_segments: int = 4,
        keep_dead_seconds: float = 3600.0,
        housekeep_every: float = 10.0,
    ) -> None:
        self.monitor = monitor
        self.directory = Path(directory)
        self.every = every
        self.segment_bytes = segment_bytes
        self.keep_segments = keep_segments
        self.keep_dead_seconds = keep_dead_seconds
        self.housekeep_every = housekeep_every
        self.directory.mkdir(parents=True, exist_ok=True)
        self._reset()
        # a worker that exits (recycled by --max-requests, stopped) writes its last records
        atexit.register(self.close)

    def _reset(self) -> None:
        """Start afresh for this process (at construction and in a forked child)."""
        self.pid = os.getpid()
        self.instance = instance_name(self.monitor.boot)
        self.written = self.monitor.buffer.last  # numbers before this are not ours to write
        self.dropped = 0
        self.part = 0
        self._file: Any = None
        self._size = 0
        # a process that starts (or is recycled) later takes the fleet's control state
        self._control_mtime = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_housekeeping = 0.0
        self._thread: threading.Thread | None = None

    # -- the thread --------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's writer thread."""
        self._thread = threading.Thread(target=self._run, name="perfnb-fleet", daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: a journal of its own (threads and files do not survive a fork)."""
        self._reset()
        self.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.flush()
                self._apply_control()
                now = time.monotonic()
                if now - self._last_housekeeping >= self.housekeep_every:
                    self._last_housekeeping = now
                    housekeep(self.directory, self.keep_dead_seconds)
            except Exception:  # the app must never fail for its journal
                log.warning("perfnb: fleet journal %s failed", self.instance, exc_info=True)
                self._stop.wait(1.0)

    def close(self) -> None:
        """Write what is left, mark the journal ended, and stop the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self.pid != os.getpid():
            return  # a forked child's copy of the parent's journal
        with contextlib.suppress(OSError):
            self.flush()
            with self._lock:
                if self._file is not None:
                    self._file.write(_dumps({"end": self.written}) + "\n")
                    self._file.close()
                    self._file = None

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every record numbered after the last written one; returns how many."""
        if self.pid != os.getpid():
            return 0
        with self._lock:
            ring = self.monitor.buffer
            if ring.last <= self.written:
                ring.drain()
                if ring.last <= self.written:
                    return 0
            lines: list[str] = []
            count = 0
            start = self.written + 1
            while True:
                read = ring.read(after=self.written, limit=10_000)
                if read.missed:
                    lines.append(_dumps({"d": [read.missed_first, read.missed_last]}))
                    self.dropped += read.missed
                    self.written = read.missed_last
                for offset, rec in enumerate(read.items):
                    try:
                        wire = record_to_json(rec)
                    except Exception:  # a malformed in-process record is skipped, counted
                        self.monitor._count("internal_errors")
                        lines.append(_dumps({"d": [read.first + offset, read.first + offset]}))
                        continue
                    lines.append(_dumps({"s": read.first + offset, "r": wire}))
                    count += 1
                if read.items:
                    self.written = read.last
                if len(read.items) < 10_000:
                    break
            if lines:
                self._append("\n".join(lines) + "\n", start)
            return count

    def _append(self, text: str, first: int) -> None:
        data = text.encode("utf-8")
        if self._file is None or self._size + len(data) > self.segment_bytes:
            self._next_segment(first)
        self._file.write(text)
        self._file.flush()  # visible to readers in the other processes at once
        self._size += len(data)

    def _next_segment(self, first: int) -> None:
        if self._file is not None:
            self._file.close()
            self.part += 1
        path = self.directory / f"{self.instance}.{self.part:06d}{_SUFFIX}"
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open between flushes
        header = {
            "perfnb_journal": 1,
            "instance": self.instance,
            "boot": self.monitor.boot,
            "host": socket.gethostname(),
            "pid": self.pid,
            "service": self.monitor.service,
            "part": self.part,
            "first": first,
            "started": datetime.now(UTC).isoformat(),
        }
        line = _dumps(header) + "\n"
        self._file.write(line)
        self._size = len(line.encode("utf-8"))
        for old in sorted(self.directory.glob(f"{self.instance}.*{_SUFFIX}"))[
            : -self.keep_segments
        ]:
            with contextlib.suppress(OSError):
                old.unlink()

    # -- control ----------------------------------------------------------------------------

    def publish_control(self, doc: dict[str, object]) -> None:
        """Write a control change for every process of the fleet (atomically)."""
        target = self.directory / CONTROL_FILE
        temp = self.directory / f".{CONTROL_FILE}.{os.getpid()}.tmp"
        temp.write_text(_dumps(doc), encoding="utf-8")
        os.replace(temp, target)
        self._control_mtime = self._control_stamp()

    def _control_stamp(self) -> int:
        try:
            return (self.directory / CONTROL_FILE).stat().st_mtime_ns
        except OSError:
            return 0

    def _apply_control(self) -> None:
        stamp = self._control_stamp()
        if stamp == self._control_mtime:
            return
        self._control_mtime = stamp
        try:
            doc = json.loads((self.directory / CONTROL_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(doc, dict):
            self.monitor.apply_control(doc)


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
            paths = sorted(self.directory.glob(f"*{_SUFFIX}"))
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
                _dumps({"boot": journal.boot, "instance": journal.instance, "last": journal.last})
                + "\n"
            )
        for path in journal.segments:
            with contextlib.suppress(OSError):
                path.unlink()
