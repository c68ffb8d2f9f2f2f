"""A bounded ring buffer whose items carry consecutive sequence numbers.

The monitor keeps the app's recent records here. Every item gets the next
sequence number (1, 2, 3, ...); when the ring is full the oldest item is
overwritten. A reader remembers the last number it saw and asks for what came
after it; if the ring has already overwritten some of those items the read says
exactly which numbers were missed, so the feed can report exact drops.

Producers on the request path use :attr:`RingBuffer.put`, which takes no lock:
it is ``deque.append`` on an intake queue, one atomic step under the GIL from any
thread. Items in the intake are numbered, in the order they were put, when the
next reader comes or :meth:`RingBuffer.drain` is called; numbering, reads and
:meth:`RingBuffer.append` (which returns the item's number) share one lock, so
numbers stay exact and gap-free with producers on many threads (WSGI servers)
and readers on an event loop.

Items may also be stored in a compact form and built into their final form
only when read (``realise=``): the monitor keeps the middleware's per-request
tuples this way, so a request costs no record dict unless someone reads it.

>>> ring = RingBuffer(capacity=3)
>>> [ring.append(x) for x in "abcde"]
[1, 2, 3, 4, 5]
>>> ring.read(after=0, limit=10)
ReadResult(missed_first=1, missed_last=2, first=3, items=['c', 'd', 'e'])
>>> ring.put("f"); ring.last
6
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from itertools import repeat, starmap
from typing import Any, Generic, NamedTuple, TypeVar

from perfnb.errors import ConfigError

__all__ = ["ReadResult", "RingBuffer"]

T = TypeVar("T")


class ReadResult(NamedTuple, Generic[T]):
    """What a read returned.

    ``items`` have sequence numbers ``first, first + 1, ...``. When the reader
    fell behind, ``missed_first..missed_last`` (inclusive) are the numbers it
    will never see; both are 0 when nothing was missed.
    """

    missed_first: int
    missed_last: int
    first: int
    items: list[T]

    @property
    def missed(self) -> int:
        """How many items the reader missed (0 when it kept up)."""
        return self.missed_last - self.missed_first + 1 if self.missed_last else 0

    @property
    def last(self) -> int:
        """Sequence number of the last item returned (``first - 1`` when none)."""
        return self.first + len(self.items) - 1


class RingBuffer(Generic[T]):
    """A sequence-numbered ring of at most ``capacity`` items.

    ``realise``, when given, turns items stored in compact form (tuples) into
    their final form when they are first read; the result replaces the tuple.

    >>> ring: RingBuffer[str] = RingBuffer(capacity=2)
    >>> ring.append("a"), ring.append("b"), ring.append("c")
    (1, 2, 3)
    >>> ring.oldest, ring.last, ring.latest(5)
    (2, 3, ['b', 'c'])
    """

    __slots__ = ("_base", "_capacity", "_intake", "_lock", "_next", "_realise", "_slots", "put")

    def __init__(self, capacity: int, *, realise: Callable[[Any], T] | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            msg = f"buffer_size: got {capacity!r}; expected a positive integer"
            raise ConfigError(msg)
        self._capacity = capacity
        self._slots: list[Any] = [None] * capacity
        # Numbers below _base belong to items that existed (in an earlier process
        # when restored from a spool) but are no longer held.
        self._base = 1
        # The number the next item taken from the intake gets.
        self._next = 1
        self._lock = threading.Lock()
        self._realise = realise
        self._intake: deque[Any] = deque()
        #: Add an item without a lock (and without learning its number): one
        #: ``deque.append``, atomic under the GIL. It is numbered on the next read.
        self.put: Callable[[Any], None] = self._intake.append

    def _drain(self) -> None:
        """Number what waits in the intake (hold the lock)."""
        intake = self._intake
        n = len(intake)
        if not n:
            return
        # Only drainers pop, under the lock, so n items are there to take; the
        # popping and the copy into the ring are C loops (starmap, slices).
        batch = list(starmap(intake.popleft, repeat((), n)))
        cap = self._capacity
        if n > cap:
            batch = batch[n - cap :]
        size = len(batch)
        at = (self._next + n - size) % cap
        head = min(size, cap - at)
        slots = self._slots
        slots[at : at + head] = batch[:head]
        if head < size:
            slots[: size - head] = batch[head:]
        self._next += n

    def drain(self) -> None:
        """Number the items put since the last read (bounds the intake's memory)."""
        if self._intake:
            with self._lock:
                self._drain()

    @property
    def capacity(self) -> int:
        """The most items the ring holds."""
        return self._capacity

    @property
    def last(self) -> int:
        """Sequence number of the newest item; 0 before the first append."""
        with self._lock:
            self._drain()
            return self._next - 1

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest item still held (``last + 1`` when empty)."""
        with self._lock:
            self._drain()
            return max(self._base, self._next - self._capacity)

    def __len__(self) -> int:
        with self._lock:
            self._drain()
            return self._next - max(self._base, self._next - self._capacity)

    def append(self, item: T) -> int:
        """Add ``item`` and return its sequence number, overwriting the oldest when full."""
        with self._lock:
            self._drain()
            seq = self._next
            self._slots[seq % self._capacity] = item
            self._next = seq + 1
        return seq

    def _items(self, start: int, end: int) -> list[T]:
        """Items ``start..end-1`` (hold the lock), realised where stored compact."""
        cap = self._capacity
        slots = self._slots
        realise = self._realise
        if realise is None:
            return [slots[s % cap] for s in range(start, end)]
        out: list[T] = []
        for s in range(start, end):
            item = slots[s % cap]
            if type(item) is tuple:
                item = slots[s % cap] = realise(item)
            out.append(item)
        return out

    def read(self, *, after: int, limit: int) -> ReadResult[T]:
        """Up to ``limit`` items numbered after ``after``, oldest first.

        ``after`` greater than :attr:`last` reads nothing (and misses nothing).
        """
        with self._lock:
            self._drain()
            nxt = self._next
            oldest = max(self._base, nxt - self._capacity)
            start = min(max(after, 0) + 1, nxt)
            missed_first = missed_last = 0
            if start < oldest:
                missed_first, missed_last = start, oldest - 1
                start = oldest
            end = min(nxt, start + max(limit, 0))
            items = self._items(start, end)
        return ReadResult(missed_first, missed_last, start, items)

    def latest(self, n: int) -> list[T]:
        """The newest ``n`` items (fewer when the ring holds fewer), oldest first."""
        with self._lock:
            self._drain()
            nxt = self._next
            start = max(self._base, nxt - self._capacity, nxt - max(n, 0))
            return self._items(start, nxt)

    def dump(self) -> tuple[int, list[T]]:
        """Everything held: the number of the first item and the items, oldest first."""
        with self._lock:
            self._drain()
            nxt = self._next
            start = max(self._base, nxt - self._capacity)
            return start, self._items(start, nxt)

    def restore(self, first: int, items: Sequence[T]) -> None:
        """Refill an empty ring so that ``items[0]`` has number ``first``.

        Numbers before ``first`` count as existed-but-gone, so a reader resuming
        from an earlier number is told exactly what it missed. When more items
        than :attr:`capacity` are given the newest are kept.
        """
        if first < 1:
            msg = f"restore: first sequence number {first!r} must be ≥ 1"
            raise ConfigError(msg)
        with self._lock:
            self._drain()
            if self._next != 1:
                msg = "restore: the buffer already holds items; restore only into a new buffer"
                raise ConfigError(msg)
            skip = max(0, len(items) - self._capacity)
            base = first + skip
            for offset, item in enumerate(items[skip:]):
                self._slots[(base + offset) % self._capacity] = item
            self._base = base
            self._next = first + len(items)
