"""Where a feed connection's records go: a live Stream, a Store's writer, any sink.

:func:`destinations` turns what :func:`perfnb.feedclient.connect` was given into
the batch callables the connection feeds, plus the one thing to do when it
closes (flush a writer it was handed, or close one it opened for a folder).

>>> got = []
>>> sinks, finish = destinations(sink=got.append)
>>> for send in sinks:
...     send([{"kind": "http"}])
>>> got, finish()
([{'kind': 'http'}], None)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from perfnb.errors import ConfigError
from perfnb.schema import Record, Sink

__all__ = ["Extends", "StoreLike", "Writer", "destinations"]

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
class StoreLike(Protocol):
    """Something that opens writers (a :class:`perfnb.store.Store`)."""

    def writer(self) -> Writer: ...


def _open_writer(store: StoreLike | Writer | str | os.PathLike[str]) -> tuple[Writer, bool]:
    """A writer for ``store`` and whether the connection owns (and closes) it."""
    if isinstance(store, str | os.PathLike):
        from perfnb.store import Store

        opened: StoreLike = Store(os.fspath(store))
        return opened.writer(), True
    if isinstance(store, StoreLike):
        return store.writer(), True
    return store, False


def destinations(
    *,
    stream: Extends | None = None,
    store: StoreLike | Writer | str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
) -> tuple[list[Callable[[list[Record]], object]], Callable[[], None]]:
    """The batch callables for these destinations, and what to run when the feed closes.

    Raises :class:`~perfnb.errors.ConfigError` when none is given.
    """
    sinks: list[Callable[[list[Record]], object]] = []
    if stream is not None:
        sinks.append(stream.extend)
    writer: Writer | None = None
    owned = False
    if store is not None:
        writer, owned = _open_writer(store)
        sinks.append(writer.extend)
    if sink is not None:
        one = sink

        def each(records: list[Record]) -> None:
            for rec in records:
                one(rec)

        sinks.append(each)
    if not sinks:
        msg = "connect: give a stream, a store or a sink for the records"
        raise ConfigError(msg)

    def finish() -> None:
        if writer is None:
            return
        try:
            if owned:
                writer.close()
            else:
                writer.flush()
        except Exception as exc:
            log.error("closing the store writer failed: %s", exc)

    return sinks, finish
