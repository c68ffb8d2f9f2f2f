"""The feed's Server-Sent Events: where a stream starts and what it sends next.

A :class:`Cursor` follows one consumer through the monitor's ring buffer. The
events it writes (the feed's wire format, see ``docs/contracts.md``):

``hello`` (no id, so it never moves the consumer's ``Last-Event-ID``)
    ``{"boot", "service", "last", "oldest", "capacity", "after", "resumed"}``
    and ``"previous_boot"`` when the consumer's id named another boot.
``records`` with ``id: <boot>:<last>``
    ``{"first": a, "last": b, "records": [wire records]}``: the records numbered
    ``a..b``, oldest first, at most ``FeedLimits.batch_records`` of them.
``dropped`` with ``id: <boot>:<last_missing>``
    ``{"dropped": n, "first_missing": a, "last_missing": b}``: the consumer fell
    behind the ring and will never see records ``a..b``; ``n = b - a + 1``.

Where a stream starts:

- ``Last-Event-ID: <boot>:<seq>`` (header, or ``?last_event_id=``) of this boot:
  right after ``seq``. A restored spool keeps the boot, so this resumes across a
  restart.
- An id of another boot (the app restarted without a spool): from the first
  record of this boot; records of this boot already overwritten are ``dropped``.
  What the old process held after ``seq`` is gone and cannot be counted; the
  ``hello`` event says ``"resumed": false`` and names ``previous_boot``.
- No id (or an unreadable one): ``?since=oldest`` (the default) from the oldest
  buffered record, ``?since=now`` from the next new one.

>>> event("records", {"first": 1}, event_id="ab:1")
b'event: records\\nid: ab:1\\ndata: {"first":1}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

from perfnb.schema import record_to_json

if TYPE_CHECKING:
    from perfnb.server.monitor import Monitor

__all__ = [
    "KEEPALIVE",
    "AsyncWaiter",
    "Cursor",
    "StreamCursor",
    "ThreadWaiter",
    "Waiter",
    "event",
    "parse_event_id",
]

#: A comment line: keeps proxies and clients from timing out an idle stream.
KEEPALIVE = b": keep-alive\n\n"
#: Tells EventSource how soon to reconnect after a stream ends (ms).
RETRY_MS = 1000


def event(name: str, data: object, *, event_id: str | None = None) -> bytes:
    """One SSE event: ``event``, optional ``id``, and ``data`` as one line of JSON."""
    lines = f"event: {name}\n"
    if event_id is not None:
        lines += f"id: {event_id}\n"
    lines += "data: " + json.dumps(data, separators=(",", ":"), default=str) + "\n\n"
    return lines.encode("utf-8")


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``"<boot>:<seq>"`` as ``(boot, seq)``; ``None`` for anything else.

    >>> parse_event_id("1a2b:42"), parse_event_id("garbage"), parse_event_id("x:-1")
    (('1a2b', 42), None, None)
    """
    if not value or len(value) > 64:
        return None
    boot, sep, seq = value.strip().rpartition(":")
    if not sep or not boot or not seq.isdigit() or not seq.isascii():
        return None
    return boot, int(seq)


class StreamCursor(Protocol):
    """What a feed stream reads from: one monitor's ring, or a fleet's journals."""

    #: None: records of this process wake the stream; else how often it must look (s).
    poll_seconds: float | None

    def opening(self) -> bytes: ...
    def pending(self) -> bool: ...
    def pull(self) -> bytes: ...


class Cursor:
    """One consumer's place in the monitor's buffer, and the events that move it."""

    __slots__ = ("_monitor", "after", "previous_boot", "resumed", "sent_records")
    poll_seconds: float | None = None

    def __init__(self, monitor: Monitor, *, last_event_id: str | None, since: str) -> None:
        self._monitor = monitor
        buffer = monitor.buffer
        parsed = parse_event_id(last_event_id)
        self.previous_boot: str | None = None
        self.resumed = False
        self.sent_records = 0
        if parsed is not None and parsed[0] == monitor.boot:
            self.after = min(parsed[1], buffer.last)
            self.resumed = True
        elif parsed is not None:
            self.previous_boot = parsed[0]
            self.after = 0
        elif since == "now":
            self.after = buffer.last
        else:
            self.after = buffer.oldest - 1

    def opening(self) -> bytes:
        """The ``retry`` hint and the ``hello`` event."""
        buffer = self._monitor.buffer
        hello: dict[str, object] = {
            "boot": self._monitor.boot,
            "service": self._monitor.service,
            "last": buffer.last,
            "oldest": buffer.oldest,
            "capacity": buffer.capacity,
            "after": self.after,
            "resumed": self.resumed,
        }
        if self.previous_boot is not None:
            hello["previous_boot"] = self.previous_boot
        return f"retry: {RETRY_MS}\n\n".encode() + event("hello", hello)

    def pending(self) -> bool:
        """Whether records newer than the cursor are buffered."""
        return self._monitor.buffer.last > self.after

    def pull(self) -> bytes:
        """The next events (``dropped`` and/or one ``records`` batch); ``b""`` when caught up."""
        monitor = self._monitor
        read = monitor.buffer.read(after=self.after, limit=monitor.limits.batch_records)
        out = b""
        boot = monitor.boot
        if read.missed:
            out += event(
                "dropped",
                {
                    "dropped": read.missed,
                    "first_missing": read.missed_first,
                    "last_missing": read.missed_last,
                },
                event_id=f"{boot}:{read.missed_last}",
            )
            self.after = read.missed_last
        if read.items:
            wire = []
            for rec in read.items:
                try:
                    wire.append(record_to_json(rec))
                except Exception:  # a malformed in-process record is skipped, not fatal
                    continue
            self.sent_records += len(wire)
            out += event(
                "records",
                {"first": read.first, "last": read.last, "records": wire},
                event_id=f"{boot}:{read.last}",
            )
            self.after = read.last
        return out


class Waiter(ABC):
    """A feed stream waiting for records; :meth:`wake` is called from :meth:`Monitor.record`."""

    __slots__ = ("armed",)

    def __init__(self) -> None:
        self.armed = False

    @abstractmethod
    def wake(self) -> None:
        """Wake the waiting stream; safe to call from any thread."""


class AsyncWaiter(Waiter):
    """Wakes a stream served on an asyncio loop, from any thread."""

    __slots__ = ("event", "loop", "thread")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.thread = threading.get_ident()

    def wake(self) -> None:
        if not self.armed:
            return
        self.armed = False
        if threading.get_ident() == self.thread:
            self.event.set()
            return
        # A loop closed under us has nothing waiting on it any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class ThreadWaiter(Waiter):
    """Wakes a stream served by a WSGI worker thread."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def wake(self) -> None:
        if self.armed:
            self.armed = False
            self.event.set()
