"""Subscriptions to a live stream: each consumer's queue, counters and off switch.

The stream owns the delivery (one dispatcher thread per stream); this module holds
what a consumer sees of it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from perfnb._closing import Closing
from perfnb.schema import Record

if TYPE_CHECKING:
    from perfnb.stream import Stream

__all__ = ["Callback", "Subscription"]

#: What a subscriber is given: a batch of records, oldest first.
Callback = Callable[[list[Record]], None]


class Subscription(Closing):
    """One consumer of a :class:`Stream`: its queue, counters and off switch.

    ``delivered`` counts records handed to the callback (also when it raised),
    ``dropped`` records lost because the queue was full or the subscription closed
    with records still queued, ``errors`` calls that raised. For records pushed
    after subscribing, ``delivered + dropped + pending`` is exactly their number.

    >>> from perfnb.stream import Stream
    >>> stream = Stream()
    >>> with stream.subscribe(print, every=0.1) as sub:
    ...     sub.pending
    0
    """

    def __init__(
        self,
        stream: Stream,
        callback: Callback,
        *,
        every: float,
        max_batch: int,
        max_pending: int,
    ) -> None:
        self.every = every
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self._stream = stream
        self._callback = callback
        self._queue: deque[Record] = deque(maxlen=max_pending)
        self._in_flight = 0
        self._due = 0.0  # monotonic time of the next delivery by the clock
        self._urgent = False  # deliver now, whatever `every` says (flush)
        self._closed = False

    @property
    def pending(self) -> int:
        """Records queued or being delivered right now."""
        return len(self._queue) + self._in_flight

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (directly or by :meth:`Stream.close`)."""
        return self._closed

    def flush(self, *, timeout: float | None = 5.0) -> bool:
        """Deliver everything queued now; wait up to ``timeout`` seconds for it.

        Returns whether the queue was empty when it returned. Called from inside a
        callback it cannot wait for itself and only asks for an early delivery.
        """
        return self._stream._flush(self, timeout)

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop delivering, after up to ``timeout`` seconds spent flushing the queue.

        Records still queued after that are counted in :attr:`dropped`. Closing the
        last subscription stops the stream's dispatcher thread.
        """
        self._stream._unsubscribe(self, timeout)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Subscription {state} delivered={self.delivered} dropped={self.dropped} "
            f"pending={self.pending} errors={self.errors}>"
        )


class Dispatcher:
    """The one thread that runs a stream's callbacks, and how to wake or stop it."""

    def __init__(self, stream: Stream) -> None:
        self.wake = threading.Event()
        self.stop = False
        self.thread = threading.Thread(
            target=stream._dispatch, args=(self,), name="perfnb-stream-dispatch", daemon=True
        )
