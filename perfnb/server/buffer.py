"""A bounded ring buffer whose items carry consecutive sequence numbers.

The monitor keeps the app's recent records here. Every appended item gets the
next sequence number (1, 2, 3, ...); when the ring is full the oldest item is
overwritten. A reader remembers the last number it saw and asks for what came
after it; if the ring has already overwritten some of those items the read says
exactly which numbers were missed, so the feed can report exact drops.

Appends and reads are serialised by one lock, so producers on many threads
(WSGI servers) and readers on an event loop can share one buffer.

>>> ring = RingBuffer(capacity=3)
>>> [ring.append(x) for x in "abcde"]
[1, 2, 3, 4, 5]
>>> ring.read(after=0, limit=10)
ReadResult(missed_first=1, missed_last=2, first=3, items=['c', 'd', 'e'])
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

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

    >>> ring: RingBuffer[str] = RingBuffer(capacity=2)
    >>> ring.append("a"), ring.append("b"), ring.append("c")
    (1, 2, 3)
    >>> ring.oldest, ring.last, ring.latest(5)
    (2, 3, ['b', 'c'])
    """

    __slots__ = ("_base", "_capacity", "_lock", "_next", "_slots")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            msg = f"buffer_size: got {capacity!r}; expected a positive integer"
            raise ConfigError(msg)
        self._capacity = capacity
        self._slots: list[T | None] = [None] * capacity
        # Numbers below _base belong to items that existed (in an earlier process
        # when restored from a spool) but are no longer held.
        self._base = 1
        self._next = 1
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """The most items the ring holds."""
        return self._capacity

    @property
    def last(self) -> int:
        """Sequence number of the newest item; 0 before the first append."""
        return self._next - 1

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest item still held (``last + 1`` when empty)."""
        with self._lock:
            return max(self._base, self._next - self._capacity)

    def __len__(self) -> int:
        with self._lock:
            return self._next - max(self._base, self._next - self._capacity)

    def append(self, item: T) -> int:
        """Add ``item`` and return its sequence number, overwriting the oldest when full."""
        with self._lock:
            seq = self._next
            self._slots[seq % self._capacity] = item
            self._next = seq + 1
        return seq

    def read(self, *, after: int, limit: int) -> ReadResult[T]:
        """Up to ``limit`` items numbered after ``after``, oldest first.

        ``after`` greater than :attr:`last` reads nothing (and misses nothing).
        """
        with self._lock:
            nxt = self._next
            oldest = max(self._base, nxt - self._capacity)
            start = min(max(after, 0) + 1, nxt)
            missed_first = missed_last = 0
            if start < oldest:
                missed_first, missed_last = start, oldest - 1
                start = oldest
            end = min(nxt, start + max(limit, 0))
            cap = self._capacity
            slots = self._slots
            items = [slots[s % cap] for s in range(start, end)]
        return ReadResult(missed_first, missed_last, start, items)  # type: ignore[arg-type]

    def latest(self, n: int) -> list[T]:
        """The newest ``n`` items (fewer when the ring holds fewer), oldest first."""
        with self._lock:
            nxt = self._next
            start = max(self._base, nxt - self._capacity, nxt - max(n, 0))
            cap = self._capacity
            slots = self._slots
            return [slots[s % cap] for s in range(start, nxt)]  # type: ignore[misc]

    def dump(self) -> tuple[int, list[T]]:
        """Everything held: the number of the first item and the items, oldest first."""
        with self._lock:
            nxt = self._next
            start = max(self._base, nxt - self._capacity)
            cap = self._capacity
            slots = self._slots
            return start, [slots[s % cap] for s in range(start, nxt)]  # type: ignore[misc]

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
            if self._next != 1:
                msg = "restore: the buffer already holds items; restore only into a new buffer"
                raise ConfigError(msg)
            skip = max(0, len(items) - self._capacity)
            base = first + skip
            for offset, item in enumerate(items[skip:]):
                self._slots[(base + offset) % self._capacity] = item
            self._base = base
            self._next = first + len(items)
