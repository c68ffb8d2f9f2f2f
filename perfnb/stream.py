"""The live stream: a bounded buffer of recent records, pandas frames and subscriptions.

Producers (the feed client, instrumented httpx clients, the load engine) push records
from any thread or asyncio task; the notebook reads the recent window as a pandas
DataFrame with :meth:`Stream.frame`, and consumers (widgets, a store writer) receive
batches through :meth:`Stream.subscribe` on one dispatcher thread per stream.

Bounds: at most ``max_records`` records, none older than ``max_age`` seconds (by their
``time``, against ``clock``). Nothing a consumer does can block or grow without bound:
each subscription has its own queue of at most ``max_pending`` records, and when it
is full the oldest queued record is dropped and counted in
:attr:`Subscription.dropped`.

Frames have the schema's columns in schema order and these dtypes (the ones pyarrow
gives for :func:`perfnb.schema.arrow_schema`, with integers kept as integers):

==========================  ========================================
schema type                 pandas dtype
==========================  ========================================
timestamp                   ``datetime64[us, UTC]``
category                    ``category`` (string categories)
string                      the default string dtype (``str``)
int16 / int32 / int64       nullable ``Int16`` / ``Int32`` / ``Int64``
float32 / float64           ``float64`` (null is NaN; ``*_ms`` rounded to the µs)
tags                        ``object``: a ``dict`` or ``None`` per row
==========================  ========================================

Rows come in arrival order (usually, not always, time order).

>>> from datetime import datetime, timezone
>>> stream = Stream()
>>> stream.push({"time": datetime.now(timezone.utc), "source": "client", "kind": "http",
...              "route": "/api/cards/{card_id}", "status": 200, "duration_ms": 4.2})
>>> stream.frame(window=60)[["route", "status", "duration_ms"]]
                  route  status  duration_ms
0  /api/cards/{card_id}     200          4.2
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from perfnb._closing import Closing
from perfnb.chunks import Chunk, merge, to_table
from perfnb.errors import ConfigError, RecordError
from perfnb.frames import frame_from_arrow
from perfnb.schema import Record, arrow_schema, epoch_us, validate_record
from perfnb.subscription import Callback, Dispatcher, Subscription

if TYPE_CHECKING:
    pass

__all__ = ["Stream", "Subscription", "frame_from_arrow"]

_log = logging.getLogger(__name__)


def _check_positive(name: str, value: object, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ConfigError(f"{name}: got {value!r}; expected {kind} > 0")
    if not 0 < value < math.inf:
        raise ConfigError(f"{name}: got {value!r}; expected {kind} > 0")


class Stream(Closing):
    """A bounded live buffer of records that turns into pandas frames and batches.

    ``push`` and ``extend`` are thread-safe, never wait for subscribers and can be
    used as a :data:`~perfnb.schema.Sink`. With ``validate=True`` (the default) a
    record that does not fit the schema raises :class:`~perfnb.errors.RecordError`
    and is counted in ``stats["rejected"]``; nothing of a refused ``extend`` is kept.
    ``validate=False`` is for producers whose records are already validated (the
    feed client reads them with :func:`~perfnb.schema.record_from_json`).

    ``clock`` gives the current time in seconds since the epoch (``time.time``);
    tests pass their own.

    >>> from datetime import datetime, timezone
    >>> stream = Stream(max_records=2)
    >>> now = datetime.now(timezone.utc)
    >>> stream.extend({"time": now, "source": "load", "kind": "load"} for _ in range(3))
    >>> len(stream), stream.stats["evicted"]
    (2, 1)
    """

    def __init__(
        self,
        *,
        max_records: int = 200_000,
        max_age: float = 600.0,
        validate: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_positive("max_records", max_records, integer=True)
        _check_positive("max_age", max_age)
        self.max_records = max_records
        self.max_age = float(max_age)
        self.validate = validate
        self._clock = clock
        self._schema = arrow_schema()
        self._lock = threading.Lock()
        self._delivery = threading.Condition(self._lock)  # signalled after each batch
        # The window in arrival order: the time (µs) of each retained record. Record
        # seq numbers run from _next_seq - len(_times) to _next_seq - 1.
        self._times: deque[int] = deque()
        self._next_seq = 0
        # Records not yet converted to Arrow (the newest), starting at _pending_seq.
        self._pending: deque[Record] = deque()
        self._pending_times: deque[int] = deque()
        self._pending_seq = 0
        # Converted records, oldest first; only frame() touches them, under _convert_lock.
        self._chunks: list[Chunk] = []
        self._convert_lock = threading.Lock()
        self._evicted = 0
        self._rejected = 0
        self._subs: list[Subscription] = []
        self._dispatcher: Dispatcher | None = None

    # -- producing ---------------------------------------------------------------

    def _check(self, record: Mapping[str, object]) -> tuple[Record, int]:
        if self.validate:
            try:
                checked = validate_record(record)
            except RecordError:
                with self._lock:
                    self._rejected += 1
                raise
            # validate_record guarantees an aware datetime in "time".
            return checked, epoch_us(checked["time"])
        try:
            checked = cast(Record, record)
            stamp = checked["time"]
            if not isinstance(stamp, datetime) or stamp.utcoffset() is None:
                raise RecordError(f"column 'time': got {stamp!r}; expected an aware datetime")
            return checked, epoch_us(stamp)
        except RecordError:
            with self._lock:
                self._rejected += 1
            raise
        except (KeyError, TypeError):
            with self._lock:
                self._rejected += 1
            raise RecordError(f"not a record: {record!r:.200}") from None

    def push(self, record: Record) -> None:
        """Add one record. Raises :class:`~perfnb.errors.RecordError` for a bad record.

        >>> from datetime import datetime, timezone
        >>> Stream().push({"time": datetime.now(timezone.utc), "source": "nowhere",
        ...                "kind": "http"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        perfnb.errors.RecordError: column 'source': got 'nowhere' (str); expected one of [...]
        """
        checked, stamp = self._check(record)
        now = self._clock()
        with self._lock:
            wake = self._add_locked(checked, stamp)
            self._evict_locked(now)
        if wake:
            self._wake()

    def extend(self, records: Iterable[Record]) -> None:
        """Add many records at once; all or none (the error names the bad one's index)."""
        checked: list[tuple[Record, int]] = []
        for index, record in enumerate(records):
            try:
                checked.append(self._check(record))
            except RecordError as exc:
                raise RecordError(f"record {index}: {exc}") from None
        if not checked:
            return
        now = self._clock()
        wake = False
        with self._lock:
            for item, stamp in checked:
                wake = self._add_locked(item, stamp) or wake
            self._evict_locked(now)
        if wake:
            self._wake()

    def _add_locked(self, record: Record, stamp: int) -> bool:
        self._times.append(stamp)
        self._pending.append(record)
        self._pending_times.append(stamp)
        self._next_seq += 1
        wake = False
        for sub in self._subs:
            queue = sub._queue
            if len(queue) == sub.max_pending:
                sub.dropped += 1  # the deque's maxlen drops the oldest on append
            queue.append(record)
            size = len(queue)
            # Wake the dispatcher only on transitions: a full batch is ready, or an
            # eager subscriber (every=0) has something new.
            if size == sub.max_batch or (size == 1 and sub.every == 0):
                wake = True
        return wake

    def _evict_locked(self, now: float) -> None:
        times = self._times
        excess = len(times) - self.max_records
        for _ in range(excess):
            times.popleft()
        evicted = max(excess, 0)
        cutoff = int((now - self.max_age) * 1_000_000)
        # Arrival order, not time order: a young record at the head shields older
        # ones behind it until it ages out; frame() filters those by time anyway.
        while times and times[0] < cutoff:
            times.popleft()
            evicted += 1
        if not evicted:
            return
        self._evicted += evicted
        first = self._next_seq - len(times)
        pending, pending_times = self._pending, self._pending_times
        while pending and self._pending_seq < first:
            pending.popleft()
            pending_times.popleft()
            self._pending_seq += 1

    # -- reading -----------------------------------------------------------------

    def __len__(self) -> int:
        """Records currently retained (before the age bound is applied by ``frame``)."""
        return len(self._times)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``pushed``, ``evicted``, ``rejected``, ``retained``, ``subscribers``."""
        with self._lock:
            return {
                "pushed": self._next_seq,
                "evicted": self._evicted,
                "rejected": self._rejected,
                "retained": len(self._times),
                "subscribers": len(self._subs),
            }

    def frame(self, window: float | timedelta | None = None) -> pd.DataFrame:
        """The retained records of the last ``window`` (seconds or timedelta) as a DataFrame.

        ``None`` means the whole buffer (bounded by ``max_age``). Records are
        converted to columns once, on the first ``frame`` that sees them, so a live
        view that calls it twice a second pays only for what arrived in between.

        >>> Stream().frame(window=30).columns[:4].tolist()
        ['time', 'source', 'kind', 'service']
        """
        if isinstance(window, timedelta):
            window = window.total_seconds()
        if window is not None and (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not 0 <= window < math.inf
        ):
            raise ConfigError(f"window: got {window!r}; expected None, seconds >= 0 or a timedelta")
        now = self._clock()
        age = self.max_age if window is None else min(float(window), self.max_age)
        cutoff = int((now - age) * 1_000_000)
        with self._convert_lock:
            with self._lock:
                self._evict_locked(now)
                records = list(self._pending)
                times = list(self._pending_times)
                first = self._pending_seq
                self._pending.clear()
                self._pending_times.clear()
                self._pending_seq = self._next_seq
            # Conversion runs outside the stream lock so producers are not held up.
            if records:
                table = to_table(records, times, self._schema)
                self._chunks.append(Chunk(first, table, np.asarray(times, dtype=np.int64)))
            with self._lock:
                keep = self._next_seq - len(self._times)
            self._chunks = self._compact(keep)
            parts = []
            for chunk in self._chunks:
                view = chunk.drop_before(keep)
                mask = view.times >= cutoff
                parts.append(view.table if mask.all() else view.table.filter(pa.array(mask)))
        if not parts:
            return frame_from_arrow(self._schema.empty_table())
        return frame_from_arrow(pa.concat_tables(parts))

    def _compact(self, keep: int) -> list[Chunk]:
        # Drop what was evicted and merge neighbours of similar size, so the chunk
        # count stays logarithmic in the window and each record is copied O(log n) times.
        chunks: list[Chunk] = []
        for chunk in self._chunks:
            if chunk.end <= keep:
                continue
            if chunk.first < keep and (keep - chunk.first) * 2 > len(chunk.times):
                chunk = chunk.drop_before(keep)
                chunk = Chunk(chunk.first, chunk.table.combine_chunks(), chunk.times.copy())
            chunks.append(chunk)
            while len(chunks) >= 2 and len(chunks[-2].times) <= 2 * len(chunks[-1].times):
                newer = chunks.pop()
                older = chunks.pop()
                chunks.append(merge(older.drop_before(keep), newer))
        return chunks

    # -- subscribing ---------------------------------------------------------------

    def subscribe(
        self,
        callback: Callback,
        *,
        every: float = 0.5,
        max_batch: int = 10_000,
        max_pending: int = 100_000,
    ) -> Subscription:
        """Call ``callback(batch)`` with the records pushed from now on.

        Batches (at most ``max_batch`` records, oldest first) are delivered on the
        stream's dispatcher thread at most every ``every`` seconds, or as soon as a
        full batch is queued; ``every=0`` delivers as soon as anything arrives. A
        callback that raises is logged and counted in ``Subscription.errors``. When
        ``max_pending`` records are queued the oldest are dropped and counted.

        >>> stream = Stream()
        >>> sub = stream.subscribe(lambda batch: None, every=1.0)
        >>> sub.close()
        >>> stream.stats["subscribers"]
        0
        """
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not 0 <= every < math.inf
        ):
            raise ConfigError(f"every: got {every!r}; expected seconds >= 0")
        _check_positive("max_batch", max_batch, integer=True)
        _check_positive("max_pending", max_pending, integer=True)
        if not callable(callback):
            raise ConfigError(f"callback: got {callback!r}; expected a callable")
        sub = Subscription(
            self, callback, every=float(every), max_batch=max_batch, max_pending=max_pending
        )
        with self._lock:
            sub._due = time.monotonic() + sub.every
            self._subs.append(sub)
            dispatcher = self._dispatcher
            if dispatcher is None:
                dispatcher = self._dispatcher = Dispatcher(self)
                dispatcher.thread.start()
        dispatcher.wake.set()  # recompute the next wake-up with the new subscriber
        return sub

    def close(self, *, timeout: float = 5.0) -> None:
        """Flush and close every subscription and stop the dispatcher thread.

        The buffer stays readable and writable; a later :meth:`subscribe` starts a
        new dispatcher.
        """
        with self._lock:
            subs = list(self._subs)
        deadline = time.monotonic() + timeout
        for sub in subs:
            sub.close(timeout=max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        stats = self.stats
        return (
            f"<Stream retained={stats['retained']} pushed={stats['pushed']} "
            f"subscribers={stats['subscribers']}>"
        )

    # -- delivery (the dispatcher thread) --------------------------------------------

    def _wake(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.wake.set()

    def _on_dispatcher(self) -> bool:
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.thread is threading.current_thread()

    def _flush(self, sub: Subscription, timeout: float | None) -> bool:
        with self._lock:
            if not sub.pending:
                return True
            sub._urgent = True
        self._wake()
        if self._on_dispatcher():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._delivery:
            while sub.pending and not sub._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._delivery.wait(remaining)
            return sub.pending == 0

    def _unsubscribe(self, sub: Subscription, timeout: float) -> None:
        if sub._closed:
            return
        if timeout > 0:
            self._flush(sub, timeout)
        with self._lock:
            if sub.closed:  # closed by another thread while this one flushed
                return
            sub._closed = True
            sub.dropped += len(sub._queue)
            sub._queue.clear()
            self._subs.remove(sub)
            dispatcher = self._dispatcher
            if self._subs or dispatcher is None:
                return
            dispatcher.stop = True
            self._dispatcher = None
            self._delivery.notify_all()
        dispatcher.wake.set()
        if dispatcher.thread is not threading.current_thread():
            dispatcher.thread.join(timeout=max(timeout, 1.0))

    def _dispatch(self, dispatcher: Dispatcher) -> None:
        while True:
            # Clear before looking, so a wake-up that arrives meanwhile is not lost.
            dispatcher.wake.clear()
            now = time.monotonic()
            work: list[tuple[Subscription, list[Record]]] = []
            next_wake = now + 1.0
            with self._lock:
                if dispatcher.stop:
                    return
                for sub in self._subs:
                    queue = sub._queue
                    if queue and (sub._urgent or len(queue) >= sub.max_batch or now >= sub._due):
                        if len(queue) <= sub.max_batch:
                            batch = list(queue)
                            queue.clear()
                        else:
                            batch = [queue.popleft() for _ in range(sub.max_batch)]
                        sub._in_flight += len(batch)
                        sub._due = now + sub.every
                        if not queue:
                            sub._urgent = False
                        work.append((sub, batch))
                    elif now >= sub._due:
                        sub._due = now + sub.every  # idle: look again one period later
                    if sub.every > 0:
                        next_wake = min(next_wake, sub._due)
            for sub, batch in work:
                self._deliver(sub, batch)
            if work:
                continue  # more may be queued beyond max_batch; look again at once
            dispatcher.wake.wait(max(0.0, next_wake - time.monotonic()))

    def _deliver(self, sub: Subscription, batch: list[Record]) -> None:
        try:
            sub._callback(batch)
        except Exception:
            sub.errors += 1
            # The first failure with its traceback; later ones quietly, so a broken
            # consumer does not flood the notebook twice a second.
            level = logging.ERROR if sub.errors == 1 else logging.DEBUG
            _log.log(
                level,
                "stream subscriber %r raised on a batch of %d records (failure %d)",
                sub._callback,
                len(batch),
                sub.errors,
                exc_info=True,
            )
        with self._delivery:
            sub._in_flight -= len(batch)
            sub.delivered += len(batch)
            self._delivery.notify_all()
