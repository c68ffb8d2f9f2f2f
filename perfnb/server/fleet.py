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
>>> from perfnb.server.fleetread import FleetReader
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from perfnb.schema import record_to_json
from perfnb.server.fleetread import SUFFIX, dumps, housekeep

if TYPE_CHECKING:
    from perfnb.server.monitor import Monitor

__all__ = ["CONTROL_FILE", "FLEET_ENV", "FleetJournal", "instance_name"]

log = logging.getLogger("perfnb.server")

CONTROL_FILE: Final = "_control.json"
#: The environment variable naming a host's fleet directory.
FLEET_ENV: Final = "PERFNB_FLEET_DIR"


def instance_name(boot: str) -> str:
    """``<host>-<pid>-<boot>``: a process of the app, told apart from every other."""
    host = socket.gethostname().replace("-", "_").replace(".", "_")[:40] or "host"
    return f"{host}-{os.getpid()}-{boot}"


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
                    self._file.write(dumps({"end": self.written}) + "\n")
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
                    lines.append(dumps({"d": [read.missed_first, read.missed_last]}))
                    self.dropped += read.missed
                    self.written = read.missed_last
                for offset, rec in enumerate(read.items):
                    try:
                        wire = record_to_json(rec)
                    except Exception:  # a malformed in-process record is skipped, counted
                        self.monitor._count("internal_errors")
                        lines.append(dumps({"d": [read.first + offset, read.first + offset]}))
                        continue
                    lines.append(dumps({"s": read.first + offset, "r": wire}))
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
        path = self.directory / f"{self.instance}.{self.part:06d}{SUFFIX}"
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
        line = dumps(header) + "\n"
        self._file.write(line)
        self._size = len(line.encode("utf-8"))
        for old in sorted(self.directory.glob(f"{self.instance}.*{SUFFIX}"))[: -self.keep_segments]:
            with contextlib.suppress(OSError):
                old.unlink()

    # -- control ----------------------------------------------------------------------------

    def publish_control(self, doc: dict[str, object]) -> None:
        """Write a control change for every process of the fleet (atomically)."""
        target = self.directory / CONTROL_FILE
        temp = self.directory / f".{CONTROL_FILE}.{os.getpid()}.tmp"
        temp.write_text(dumps(doc), encoding="utf-8")
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
