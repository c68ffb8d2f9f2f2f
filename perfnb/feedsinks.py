"""Where a feed connection's records go: a live Stream, a Store's writer, any sink.

:func:`destinations` turns what :func:`perfnb.feedclient.connect` was given into
one :class:`Destinations`: what every batch is handed to, the store's resume
points when the store keeps them, and what to do when the feeds close (flush a
writer it was handed, or close one it opened for a folder).

A store writer that keeps resume points (:class:`perfnb.store.StoreWriter`) gets
each batch *with* the feed's mark through ``commit``, first: when that fails, the
batch goes nowhere and :class:`DeliveryFailed` tells the connection to ask the
app again from its last stored point. Other destinations that raise are counted.

>>> got = []
>>> out = destinations(sink=got.append)
>>> out.deliver([{"kind": "http"}], key="k", mark={})
0
>>> got, out.finish()
([{'kind': 'http'}], None)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from perfnb.errors import ConfigError, PerfnbError
from perfnb.schema import Record, Sink

if TYPE_CHECKING:
    from perfnb.store.resume import Claim, ResumePoints

__all__ = [
    "DeliveryFailed",
    "Destinations",
    "Extends",
    "KeepsResumePoints",
    "StoreLike",
    "Writer",
    "destinations",
]

log = logging.getLogger("perfnb.feedclient")


@runtime_checkable
class Extends(Protocol):
    """Anything that takes records in batches (a :class:`perfnb.stream.Stream`)."""

    def extend(self, records: list[Record]) -> Any: ...


@runtime_checkable
class Writer(Protocol):
    """A store writer: batches in, flushed or closed at the end."""

    def extend(self, records: list[Record]) -> Any: ...
    def flush(self) -> Any: ...
    def close(self) -> Any: ...


@runtime_checkable
class KeepsResumePoints(Writer, Protocol):
    """A writer that stores a batch and its feed's resume mark as one (a StoreWriter)."""

    resume_points: ResumePoints

    def commit(self, records: list[Record], *, key: str, mark: Mapping[str, Any]) -> int: ...


@runtime_checkable
class StoreLike(Protocol):
    """Something that opens writers (a :class:`perfnb.store.Store`)."""

    def writer(self) -> Writer: ...


class DeliveryFailed(PerfnbError):
    """The store did not take a batch; nothing of it was delivered anywhere."""


def _open_writer(store: StoreLike | Writer | str | os.PathLike[str]) -> tuple[Writer, bool]:
    """A writer for ``store`` and whether the connection owns (and closes) it."""
    if isinstance(store, str | os.PathLike):
        from perfnb.store import Store

        opened: StoreLike = Store(os.fspath(store))
        return opened.writer(), True
    if isinstance(store, StoreLike):
        return store.writer(), True
    return store, False


class Destinations:
    """The batch destinations of one or several feeds; deliveries are serialised."""

    def __init__(
        self,
        sinks: list[Callable[[list[Record]], object]],
        writer: Writer | None,
        *,
        owned: bool,
    ) -> None:
        self._sinks = sinks
        self._writer = writer
        self._owned = owned
        self.durable: KeepsResumePoints | None = (
            writer if isinstance(writer, KeepsResumePoints) else None
        )
        self._lock = threading.Lock()
        self._claims: list[Claim] = []

    def claim(self, key: str) -> None:
        """Hold feed ``key`` in the store until :meth:`finish` (one follower per feed)."""
        if self.durable is not None:
            self._claims.append(self.durable.resume_points.claim(key))

    def resume_point(self, key: str) -> dict[str, Any] | None:
        """The store's mark for feed ``key``, if it keeps one."""
        return None if self.durable is None else self.durable.resume_points.get(key)

    def deliver(self, records: list[Record], *, key: str, mark: Mapping[str, Any]) -> int:
        """Hand one batch on; returns how many destinations raised (the store excepted).

        With a resume-keeping store, ``mark`` is stored with the batch (even an
        empty one); raises :class:`DeliveryFailed` when the store refuses it.
        """
        errors = 0
        with self._lock:
            if self.durable is not None:
                try:
                    self.durable.commit(records, key=key, mark=mark)
                except Exception as exc:
                    msg = f"the store did not take {len(records)} records: {exc}"
                    raise DeliveryFailed(msg) from exc
            elif self._writer is not None and records:
                errors += self._each(self._writer.extend, records)
            if records:
                for deliver in self._sinks:
                    errors += self._each(deliver, records)
        return errors

    @staticmethod
    def _each(deliver: Callable[[list[Record]], object], records: list[Record]) -> int:
        try:
            deliver(records)
        except Exception as exc:
            log.error("delivering %d records failed: %s", len(records), exc)
            return 1
        return 0

    def finish(self) -> None:
        """Flush (or close, if opened here) the store writer, then release the feeds."""
        writer = self._writer
        try:
            if writer is not None:
                if self._owned:
                    writer.close()
                else:
                    writer.flush()
        except Exception as exc:
            log.error("closing the store writer failed: %s", exc)
        finally:
            claims, self._claims = self._claims, []
            for held in claims:
                held.release()


def destinations(
    *,
    stream: Extends | None = None,
    store: StoreLike | Writer | str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
) -> Destinations:
    """The destinations for these arguments.

    Raises :class:`~perfnb.errors.ConfigError` when none is given.
    """
    sinks: list[Callable[[list[Record]], object]] = []
    if stream is not None:
        sinks.append(stream.extend)
    if sink is not None:
        one = sink

        def each(records: list[Record]) -> None:
            for rec in records:
                one(rec)

        sinks.append(each)
    if store is None and not sinks:
        msg = "connect: give a stream, a store or a sink for the records"
        raise ConfigError(msg)
    writer: Writer | None = None
    owned = False
    if store is not None:
        writer, owned = _open_writer(store)
    return Destinations(sinks, writer, owned=owned)
