"""The monitor: one per app, the place every record of the app goes through.

It holds the control state (enabled, which kinds, a sampling ratio), a bounded
ring buffer of recent records with consecutive sequence numbers, an optional
sink, counters of what was skipped and of bad input dropped, and serves perfnb's
endpoints under its prefix (the feed, the snapshot, control and the beacon
intake; see :mod:`perfnb.server.feed`).

:meth:`Monitor.record` is on every request's path, so it does the least it can:
a few attribute reads, a lock-free append to the ring's intake (numbered when
the next reader comes, see :mod:`perfnb.server.buffer`), the sink call, and a
wake-up of waiting feed streams only when one is waiting. The middleware goes
one step further with :meth:`Monitor.take`: it hands over a compact tuple that
becomes a record dict only when the feed, the snapshot or the spool reads it.

>>> from datetime import datetime, timezone
>>> monitor = Monitor(service="shop", token="t")
>>> monitor.record({"time": datetime(2026, 1, 1, tzinfo=timezone.utc),
...                 "source": "server", "kind": "http", "route": "/", "status": 200})
>>> monitor.last_seq, monitor.counters["recorded"]
(1, 1)
>>> monitor.configure(kinds=["vital"])
>>> monitor.wants("http"), monitor.wants("vital")
(False, True)
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from perfnb.errors import ConfigError, PerfnbError, StoreError
from perfnb.schema import Record, Sink
from perfnb.server import beacon as _beacon
from perfnb.server.auth import Authoriser
from perfnb.server.buffer import RingBuffer
from perfnb.server.control import (
    UNSET,
    Control,
    FeedLimits,
    UnsetType,
    check_enabled,
    check_kinds,
    check_sample,
)
from perfnb.server.fleet import FLEET_ENV, FleetJournal
from perfnb.server.intake import BeaconIntake
from perfnb.server.snapshot import Snapshot, build_snapshot
from perfnb.server.spool import read_spool, write_spool
from perfnb.server.sse import Waiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    StartResponse = Callable[..., Any]

__all__ = ["UNSAMPLED_KINDS", "Control", "FeedLimits", "Monitor"]

log = logging.getLogger("perfnb.server")

#: Kinds that are never sampled away: low-rate state records whose loss would
#: leave a hole rather than thin a distribution.
UNSAMPLED_KINDS: Final = frozenset({"process", "health", "alert", "load"})


class Monitor(BeaconIntake):
    """Control state, ring buffer, counters and perfnb's endpoints for one app.

    ``token`` (else ``PERFNB_TOKEN``) protects the feed; without one only loopback
    clients are served. ``spool`` names a file: an existing spool is restored (and
    removed) at construction, and :meth:`close` writes the buffer there, so a
    restarted app's feed resumes where it stopped.

    >>> m = Monitor(prefix="/_perf/", buffer_size=10)
    >>> m.prefix, m.owns("/_perf/stream"), m.owns("/_perfx")
    ('/_perf', True, False)
    """

    def __init__(
        self,
        *,
        service: str = "app",
        sink: Sink | None = None,
        prefix: str = "/api/performance-metrics",
        token: str | None = None,
        buffer_size: int = 100_000,
        clock: Callable[[], float] = time.time,
        spool: str | os.PathLike[str] | None = None,
        limits: FeedLimits | None = None,
        beacon_limits: _beacon.BeaconLimits | None = None,
        environ: dict[str, str] | None = None,
        fleet: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            msg = f"prefix: got {prefix!r}; expected a path starting with '/'"
            raise ConfigError(msg)
        self.service = service
        self.prefix = prefix.rstrip("/") or "/"
        self._prefix_slash = self.prefix if self.prefix == "/" else self.prefix + "/"
        self.clock = clock
        self.limits = limits or FeedLimits()
        self.beacon_limits = beacon_limits or _beacon.BeaconLimits()
        self.auth = Authoriser(token=token, environ=environ)
        self.buffer: RingBuffer[Record] = RingBuffer(buffer_size, realise=self._realise)
        self.boot = secrets.token_hex(6)
        self.spool = Path(spool) if spool is not None else None
        self._sink = sink
        self._lock = threading.Lock()
        self._random = random.Random().random
        self._enabled = True
        self._kinds: frozenset[str] | None = None
        self._sample = 1.0
        # True while everything is recorded and nothing needs a record dict at
        # once (no sink). Kept in step with the control state by configure().
        self.direct = sink is None
        self._builders: list[Callable[[tuple[Any, ...]], Record]] = []
        self._waiters: set[Waiter] = set()
        #: While :attr:`direct` and no feed stream waits: the ring's lock-free
        #: ``put``, which the middleware calls with its compact entries instead of
        #: :meth:`take` (no control checks, no wake-ups needed). ``None`` otherwise.
        self.fast_put: Callable[[tuple[Any, ...]], None] | None = None
        self._choose_put()
        self._closed = False
        self._pages = _beacon.PageNames(limit=self.beacon_limits.pages)
        #: Salt of the hashed client keys; the middleware shares it so a browser's
        #: records and the server's records of the same client get the same key.
        self.client_secret = secrets.token_bytes(16)
        self._skipped_disabled = 0
        self._skipped_kind = 0
        self._skipped_sample = 0
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "sink_errors",
                "beacon_batches",
                "beacon_batches_bad",
                "beacon_records",
                "beacon_records_bad",
                "beacon_too_large",
                "unauthorised",
                "streams_served",
                "spool_restored",
                "internal_errors",
            ),
            0,
        )
        self.last_beacon_error = ""
        if self.spool is not None and self.spool.exists():
            try:
                self.load(self.spool)
            except PerfnbError as exc:
                log.warning("perfnb: spool %s not restored: %s", self.spool, exc)
        env = os.environ if environ is None else environ
        folder = fleet if fleet is not None else env.get(FLEET_ENV) or None
        #: This process's journal in the host's fleet directory (see :mod:`.fleet`), or None.
        self.fleet: FleetJournal | None = None
        if folder is not None:
            self.fleet = FleetJournal(self, folder)
            self.fleet.start()
        # A server that forks after the app is built (gunicorn --preload) copies this
        # monitor into every worker: each child needs an identity, a ring and a journal
        # of its own, or event ids would name different records in different workers.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- the hot path -------------------------------------------------------------

    def record(self, rec: Record) -> None:
        """Record one record, subject to the control state; never raises.

        >>> from datetime import datetime, timezone
        >>> m = Monitor()
        >>> m.record({"time": datetime.now(timezone.utc), "source": "server", "kind": "http"})
        >>> m.last_seq
        1
        """
        # The skip counters are plain increments, not locked: on a GIL build no
        # thread switch falls between the read and the write of ``+= 1`` on an
        # int attribute, and a lock here would double the cost of a skip.
        if not self._enabled:
            self._skipped_disabled += 1
            return
        kinds = self._kinds
        if kinds is not None and rec.get("kind") not in kinds:
            self._skipped_kind += 1
            return
        if (
            self._sample < 1.0
            and self._random() >= self._sample
            and rec.get("kind") not in UNSAMPLED_KINDS
        ):
            self._skipped_sample += 1
            return
        self.buffer.put(rec)
        sink = self._sink
        if sink is not None:
            try:
                sink(rec)
            except Exception:  # a failing sink must not fail the app's request
                self._count("sink_errors")
        if self._waiters:
            self.wake()

    def add_builder(self, build: Callable[[tuple[Any, ...]], Record]) -> int:
        """Register how to build records from compact entries; returns the key to use.

        An entry for :meth:`take` is a tuple whose first item is that key (a
        small int, so the tuple holds no object the garbage collector must
        follow). ``build(entry)`` must not raise.
        """
        self._builders.append(build)
        return len(self._builders) - 1

    def take(self, entry: tuple[Any, ...], kind: str) -> None:
        """Record a compact entry of ``kind`` (see :meth:`add_builder`).

        The record is built when something reads it (or at once for the sink),
        not here. Control is applied as in :meth:`record`; never raises. While
        :attr:`fast_put` is set the middleware calls it instead.
        """
        if not self._enabled:
            self._skipped_disabled += 1
            return
        kinds = self._kinds
        if kinds is not None and kind not in kinds:
            self._skipped_kind += 1
            return
        if self._sample < 1.0 and self._random() >= self._sample and kind not in UNSAMPLED_KINDS:
            self._skipped_sample += 1
            return
        sink = self._sink
        if sink is None:
            self.buffer.put(entry)
        else:
            rec: Record = self._builders[entry[0]](entry)  # builders never raise
            self.buffer.put(rec)
            try:
                sink(rec)
            except Exception:  # a failing sink must not fail the app's request
                self._count("sink_errors")
        if self._waiters:
            self.wake()

    def wake(self) -> None:
        """Wake the feed streams waiting for records."""
        for waiter in tuple(self._waiters):
            waiter.wake()

    def _realise(self, entry: tuple[Any, ...]) -> Record:
        try:
            rec: Record = self._builders[entry[0]](entry)
        except Exception:
            # A builder that fails must not break the feed or lose the number:
            # the entry becomes a record that says so.
            log.error("perfnb: a buffered entry could not be built", exc_info=True)
            self._count("internal_errors")
            rec = {
                "time": datetime.now(UTC),
                "source": "perfnb",
                "kind": "overhead",
                "service": self.service,
                "error_type": "PerfnbInternalError",
            }
        return rec

    def record_many(self, records: Iterable[Record]) -> None:
        """:meth:`record` each of ``records``."""
        for rec in records:
            self.record(rec)

    @property
    def enabled(self) -> bool:
        """Whether monitoring is on (the middleware skips its work when it is off)."""
        return self._enabled

    def wants(self, kind: str) -> bool:
        """Whether a record of ``kind`` would be kept (before sampling)."""
        kinds = self._kinds
        return self._enabled and (kinds is None or kind in kinds)

    def owns(self, path: str) -> bool:
        """Whether ``path`` is one of perfnb's endpoints (under :attr:`prefix`)."""
        return path == self.prefix or path.startswith(self._prefix_slash)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    # -- state ----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record (0 before the first)."""
        return self.buffer.last

    @property
    def counters(self) -> dict[str, int]:
        """Counts since start: recorded, skipped by control, bad input dropped.

        ``recorded`` is the newest sequence number (it carries on across a
        restored spool).
        """
        with self._lock:
            out = {
                "skipped_disabled": self._skipped_disabled,
                "skipped_kind": self._skipped_kind,
                "skipped_sample": self._skipped_sample,
                **self._counts,
            }
        out["recorded"] = self.buffer.last
        out["buffered"] = len(self.buffer)
        out["streams_open"] = len(self._waiters)
        return out

    @property
    def control(self) -> Control:
        """The current control state."""
        return Control(self._enabled, self._kinds, self._sample)

    def configure(
        self,
        *,
        enabled: bool | None = None,
        kinds: Iterable[str] | UnsetType | None = UNSET,
        sample: float | None = None,
    ) -> None:
        """Change what is recorded; arguments left out keep their value.

        ``kinds=None`` records every kind. Raises :class:`ConfigError` naming the
        field for a value outside what is accepted.

        >>> m = Monitor()
        >>> m.configure(sample=2)
        Traceback (most recent call last):
        ...
        perfnb.errors.ConfigError: sample: got 2; expected a number between 0 and 1
        """
        check_enabled(enabled)
        new_kinds = self._kinds
        if not isinstance(kinds, UnsetType):
            new_kinds = check_kinds(kinds)
        check_sample(sample)
        with self._lock:
            if enabled is not None:
                self._enabled = enabled
            self._kinds = new_kinds
            if sample is not None:
                self._sample = float(sample)
            self.direct = (
                self._enabled and self._kinds is None and self._sample >= 1.0 and self._sink is None
            )
            self._choose_put()

    def apply_control(self, doc: dict[str, object]) -> None:
        """Apply a control document (``enabled``, ``kinds``, ``sample``; any subset) written
        by another process of the fleet; a bad one is logged and ignored."""
        changes: dict[str, Any] = {k: doc[k] for k in ("enabled", "kinds", "sample") if k in doc}
        try:
            self.configure(**changes)
        except ConfigError as exc:
            log.warning("perfnb: fleet control change ignored: %s", exc)

    def publish_control(self) -> None:
        """Hand the current control state to every process of the fleet (if any)."""
        if self.fleet is not None:
            self.fleet.publish_control(self.control.as_json())

    def _forked(self) -> None:
        """In a forked child: a new identity, an empty ring, no streams, a journal of its own."""
        self.boot = secrets.token_hex(6)
        self.buffer = RingBuffer(self.buffer.capacity, realise=self._realise)
        self._lock = threading.Lock()
        self._waiters = set()
        self._choose_put()
        if self.fleet is not None:
            self.fleet.after_fork()

    def _choose_put(self) -> None:
        self.fast_put = self.buffer.put if self.direct and not self._waiters else None

    def state(self) -> dict[str, object]:
        """The document answered by ``GET <prefix>/control``."""
        doc = self.control.as_json()
        if self.fleet is not None:
            from perfnb.server.fleetread import FleetReader

            doc["fleet"] = {
                "directory": str(self.fleet.directory),
                "instance": self.fleet.instance,
                "instances": [j.describe() for j in FleetReader(self.fleet.directory).journals()],
            }
        doc.update(
            service=self.service,
            boot=self.boot,
            seq=self.buffer.last,
            oldest=self.buffer.oldest,
            capacity=self.buffer.capacity,
            counters=self.counters,
            last_beacon_error=self.last_beacon_error,
        )
        return doc

    def snapshot(self, *, route: str | None = None, include_load: bool = False) -> Snapshot:
        """The requirements-shaped snapshot of the recent buffer (see :mod:`.snapshot`)."""
        if self.fleet is not None:
            from perfnb.server.fleetread import FleetReader

            self.fleet.flush()  # this process's newest records too
            recent = FleetReader(self.fleet.directory).tail(self.limits.snapshot_scan)
        else:
            recent = self.buffer.latest(self.limits.snapshot_scan)
        return build_snapshot(recent, now=self.clock(), route=route, include_load=include_load)

    # -- serving ---------------------------------------------------------------------------

    async def handle_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an HTTP request under :attr:`prefix` (see :mod:`perfnb.server.feed`)."""
        from perfnb.server import feed

        await feed.serve_asgi(self, scope, receive, send)

    def handle_wsgi(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Serve a WSGI request under :attr:`prefix`; streams end after ``stream_seconds``."""
        from perfnb.server import feed

        return feed.serve_wsgi(self, environ, start_response)

    def _add_waiter(self, waiter: Waiter) -> None:
        self._waiters.add(waiter)
        self._choose_put()
        self._count("streams_served")

    def _remove_waiter(self, waiter: Waiter) -> None:
        self._waiters.discard(waiter)
        self._choose_put()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (open streams then end)."""
        return self._closed

    def close(self) -> None:
        """End open feed streams and, with ``spool=``, write the buffer there.

        Call it at shutdown (the middleware does on the ASGI lifespan shutdown).
        Safe to call twice; the second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        for waiter in tuple(self._waiters):
            waiter.armed = True
            waiter.wake()
        if self.fleet is not None:
            self.fleet.close()
        if self.spool is not None:
            try:
                self.save(self.spool)
            except PerfnbError as exc:
                log.warning("perfnb: spool %s not written: %s", self.spool, exc)

    # -- spool ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the buffered records, boot id and sequence numbers to ``path``.

        Atomic (written beside ``path``, then renamed). Returns the number of
        records. See :mod:`perfnb.server.spool` for the format.
        """
        first, records = self.buffer.dump()
        return write_spool(path, boot=self.boot, first=first, records=records, service=self.service)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Restore a spool written by :meth:`save` into this (still empty) monitor.

        The boot id and sequence numbers carry on, so feed clients resume with
        ``Last-Event-ID`` as if nothing happened. The file is removed once read:
        a later crash must not restore stale numbers again. Returns the number of
        records restored; raises :class:`~perfnb.errors.StoreError` for a file that
        is not a spool, or when this monitor already recorded.
        """
        if self.buffer.last != 0:
            msg = "load: the monitor already recorded; load a spool only into a new monitor"
            raise StoreError(msg)
        boot, first, records = read_spool(path)
        self.buffer.restore(first, records)
        self.boot = boot
        self._count("spool_restored", len(records))
        Path(path).unlink(missing_ok=True)
        return len(records)


def _after_fork(ref: weakref.ref[Monitor]) -> None:
    monitor = ref()
    if monitor is not None:
        monitor._forked()
