"""Follow an app's perfnb feed: into a live Stream, a Store, or any sink.

:func:`connect` opens the feed (``GET <prefix>/stream``, Server-Sent Events) from
a background thread with its own event loop, so a notebook's kernel is never
blocked. It reconnects with ``Last-Event-ID`` after the connection drops or the
app restarts (backing off up to a bound), and counts exactly what it received,
what the app's buffer dropped before it could be read, and how often it had to
reconnect — per app instance (worker process) when the feed names them.

The event id is an opaque resume token: it is sent back as it came and never
read for meaning. With a store, each batch and the token after it are stored as
one (see :mod:`perfnb.store.resume`), and a later connection to the same feed
with the same store resumes right after the last batch the store kept, so a
follower killed at any moment restarts with nothing twice and nothing skipped.

``connect([url, url, ...])`` follows several apps or hosts at once
(:class:`perfnb.feedgroup.FeedGroup`); ``perfnb record URL [URL ...] --store DIR``
(:mod:`perfnb.recorder`) does that into a Parquet store until SIGINT or SIGTERM.

>>> conn = connect("http://127.0.0.1:9/api/performance-metrics", sink=[].append)
>>> conn.close()
>>> conn.stats()["received"]
0
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, overload

import httpx

from perfnb._closing import Closing
from perfnb.errors import ConfigError, PerfnbError
from perfnb.eventstream import SSEEvent, SSEParser
from perfnb.feedcounts import Totals
from perfnb.feedevents import Counts, FeedEvents
from perfnb.feedsinks import DeliveryFailed, Destinations, Extends, StoreLike, Writer, destinations
from perfnb.feedtargets import DEFAULT_PREFIX, feed_key, feed_stream_url
from perfnb.schema import Sink

if TYPE_CHECKING:
    from perfnb.feedgroup import FeedGroup

__all__ = [
    "DEFAULT_PREFIX",
    "FeedConnection",
    "SSEEvent",
    "SSEParser",
    "connect",
    "feed_stream_url",
    "main_record",
]

log = logging.getLogger("perfnb.feedclient")


class _Fatal(Exception):
    pass


class FeedConnection(FeedEvents, Closing):
    """A feed followed from a background thread; see :func:`connect`.

    Counters (exact, readable any time): ``received`` records delivered,
    ``dropped`` records the app's buffer overwrote before this client read them
    (as the feed reported), ``reconnects`` streams reopened after an error or a
    lost connection, ``invalid`` records that failed the schema, ``boot_changes``
    app restarts without a spool (what the old process still held then is lost
    and cannot be counted), ``sink_errors`` deliveries that raised.
    :meth:`stats` adds the counts per instance and, with a store, the totals the
    store keeps for this feed over every connection that resumed it.
    """

    def __init__(
        self,
        url: str,
        *,
        destinations: Destinations,
        token: str | None,
        since: str,
        backoff: tuple[float, float],
        read_timeout: float,
        on_close: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        last_event_id: str = "",
        resume: bool = True,
        changed: threading.Condition | None = None,
    ) -> None:
        self.url = feed_stream_url(url)
        #: The feed's name: its stream URL without secrets (see :func:`feed_key`).
        self.key = feed_key(url)
        self._out = destinations
        self._token = token
        self._since = since
        self._backoff = backoff
        self._read_timeout = read_timeout
        self._on_close = on_close
        self._transport = transport
        self._counts = Counts()
        # Re-entrant: wait_for's predicate may read stats() while holding it. A
        # group of feeds shares one, so it can wait on any of them.
        self._changed = changed if changed is not None else threading.Condition(threading.RLock())
        self._lock = self._changed
        # This connection's own counts per instance (the totals are the store's).
        self._session = Totals()
        self._instance_info: dict[str, dict[str, Any]] = {}
        self._restarts_seen: set[tuple[str, str]] = set()
        stored = destinations.resume_point(self.key)
        self._totals = Totals.from_json(stored.get("totals")) if stored else Totals()
        token_stored = stored.get("token") if stored else None
        if not last_event_id and resume and isinstance(token_stored, str):
            last_event_id = token_stored
        #: The token this connection started from (stored or given), or None.
        self.resumed_from = last_event_id or None
        #: The id of the last event handled: pass it to :func:`connect` to resume.
        self.last_event_id = last_event_id
        self.boot: str | None = None
        self.connected = False
        self.error: PerfnbError | None = None
        self._stopping = False
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="perfnb-feed", daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- counters -------------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Records delivered to the stream, store and sink."""
        return self._counts.received

    @property
    def dropped(self) -> int:
        """Records the app's buffer overwrote before this client read them."""
        return self._counts.dropped

    @property
    def reconnects(self) -> int:
        """Streams reopened after a lost connection or a failed attempt."""
        return self._counts.reconnects

    @property
    def invalid(self) -> int:
        """Records that failed the schema and were left out."""
        return self._counts.invalid

    @property
    def boot_changes(self) -> int:
        """App restarts without a spool (what it held then is lost, uncounted)."""
        return self._counts.boot_changes

    @property
    def connect_failures(self) -> int:
        """Attempts to open the stream that failed."""
        return self._counts.connect_failures

    def stats(self) -> dict[str, object]:
        """All counters, per-instance counts, store totals, the last event id, the state."""
        with self._lock:
            out: dict[str, object] = dict(self._counts.__dict__)
            out.update(
                url=self.key,
                last_event_id=self.last_event_id,
                resumed_from=self.resumed_from,
                connected=self.connected,
                error=None if self.error is None else str(self.error),
                instances=self.instances(),
                totals=self._totals.to_json(),
            )
        return out

    def wait_for(self, predicate: Callable[[FeedConnection], bool], *, timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked on every event) or ``timeout``.

        >>> conn = connect("http://127.0.0.1:9", sink=[].append)
        >>> conn.wait_for(lambda c: c.received >= 1, timeout=0.01)
        False
        >>> conn.close()
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return predicate(self)
                self._changed.wait(min(remaining, 0.5))
        return True

    def _bump(self, **changes: int) -> None:
        with self._changed:
            for name, n in changes.items():
                setattr(self._counts, name, getattr(self._counts, name) + n)
            self._changed.notify_all()

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background thread still follows the feed."""
        return self._thread.is_alive()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop following (the destinations stay open: see :meth:`close`)."""
        self._stopping = True
        loop = self._loop
        task = self._task
        if task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)
        with self._changed:
            self._closed = True
            self.connected = False
            self._changed.notify_all()

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop following, then flush and close the store writer it opened. Idempotent."""
        if self._closed:
            return
        self.stop(timeout=timeout)
        if self._on_close is not None:
            self._on_close()

    def __repr__(self) -> str:
        c = self._counts
        return (
            f"<FeedConnection {self.key} received={c.received} dropped={c.dropped} "
            f"reconnects={c.reconnects} connected={self.connected}>"
        )

    # -- the background thread -----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._main())
        self._ready.set()
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            with self._changed:
                self.connected = False
                self._changed.notify_all()

    async def _main(self) -> None:
        timeout = httpx.Timeout(10.0, read=self._read_timeout)
        first, longest = self._backoff
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
            delay = first
            # Set when a stream broke or an attempt failed: the next stream that
            # opens after an earlier one counts as a reconnect.
            trouble = False
            # When the app went away (monotonic time), and how many attempts failed since.
            away: float | None = None
            failed = 0
            while not self._stopping:
                try:
                    opened = time.monotonic()
                    events, retry_ms = await self._follow(
                        client, reconnect=trouble, away=away, failed=failed
                    )
                    trouble, away, failed = False, None, 0
                    if events or time.monotonic() - opened >= 1.0:
                        delay = first
                        continue  # the app ended the stream on schedule: resume at once
                    # A stream that ended at once with nothing new (a caught-up fleet
                    # stream, an app shutting down): come back after its retry hint.
                    await asyncio.sleep(min(retry_ms / 1000, longest) if retry_ms else delay)
                    continue
                except _Fatal as exc:
                    self.error = ConfigError(str(exc))
                    log.error("%s", exc)
                    return
                except (httpx.HTTPError, OSError, ValueError, DeliveryFailed) as exc:
                    trouble = True
                    if isinstance(exc, DeliveryFailed):
                        self._bump(store_errors=1)
                        log.error("feed %s: %s; asking again in %.2fs", self.key, exc, delay)
                    else:
                        if self.connected:
                            delay = first
                        else:
                            self._bump(connect_failures=1)
                        failed += 1
                        if away is None:
                            away = time.monotonic()
                            self._bump(outages=1)
                            log.warning(
                                "feed %s %s (%s); retrying with backoff from %.2gs up to %.2gs",
                                self.key,
                                "went away" if self._counts.streams else "cannot be reached",
                                _describe(exc),
                                delay,
                                longest,
                            )
                        else:
                            log.info(
                                "feed %s: %s; retrying in %.2fs", self.key, _describe(exc), delay
                            )
                finally:
                    with self._changed:
                        self.connected = False
                        self._changed.notify_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def _follow(
        self, client: httpx.AsyncClient, *, reconnect: bool, away: float | None, failed: int
    ) -> tuple[int, int | None]:
        """One stream, from opening until the app ends it (errors propagate).

        Returns how many ``records`` and ``dropped`` events it carried, and the
        stream's ``retry`` hint (ms) if it gave one.
        """
        headers = {"accept": "text/event-stream", "cache-control": "no-store"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        params = {} if self.last_event_id else {"since": self._since}
        async with client.stream("GET", self.url, headers=headers, params=params) as response:
            status = response.status_code
            if status in (401, 403, 404):
                hint = (
                    "is the perfnb middleware installed under this prefix?"
                    if status == 404
                    else "check the token (--token or PERFNB_TOKEN)"
                )
                raise _Fatal(f"feed {self.key}: the app answered {status}; {hint}")
            if status != 200:
                msg = f"the app answered {status}"
                raise httpx.HTTPError(msg)
            with self._changed:
                self.connected = True
                if reconnect and self._counts.streams:
                    self._counts.reconnects += 1
                self._counts.streams += 1
                self._changed.notify_all()
            if away is not None:
                log.warning(
                    "feed %s is back after %.1fs (%d failed attempt%s)",
                    self.key,
                    time.monotonic() - away,
                    failed,
                    "" if failed == 1 else "s",
                )
            parser = SSEParser(last_event_id=self.last_event_id)
            carried = 0
            async for chunk in response.aiter_bytes():
                for found in parser.feed(chunk):
                    self._handle(found)
                    carried += found.event != "hello"
        return carried, parser.retry


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_options(since: str, backoff: tuple[float, float]) -> None:
    """Raise :class:`ConfigError` naming ``since`` or ``backoff`` when one is wrong."""
    if since not in ("oldest", "now"):
        msg = f"since: got {since!r}; expected 'oldest' or 'now'"
        raise ConfigError(msg)
    low, high = backoff
    if not 0 < low <= high:
        msg = f"backoff: got {backoff!r}; expected (first, longest) with 0 < first ≤ longest"
        raise ConfigError(msg)


@overload
def connect(
    url: str,
    *,
    stream: Extends | None = ...,
    store: StoreLike | Writer | str | os.PathLike[str] | None = ...,
    sink: Sink | None = ...,
    token: str | None = ...,
    since: str = ...,
    last_event_id: str | None = ...,
    backoff: tuple[float, float] = ...,
    read_timeout: float = ...,
    resume: bool = ...,
) -> FeedConnection: ...


@overload
def connect(
    url: list[str] | tuple[str, ...],
    *,
    stream: Extends | None = ...,
    store: StoreLike | Writer | str | os.PathLike[str] | None = ...,
    sink: Sink | None = ...,
    token: str | None = ...,
    since: str = ...,
    last_event_id: str | None = ...,
    backoff: tuple[float, float] = ...,
    read_timeout: float = ...,
    resume: bool = ...,
) -> FeedGroup: ...


def connect(
    url: str | list[str] | tuple[str, ...],
    *,
    stream: Extends | None = None,
    store: StoreLike | Writer | str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
    token: str | None = None,
    since: str = "oldest",
    last_event_id: str | None = None,
    backoff: tuple[float, float] = (0.25, 5.0),
    read_timeout: float = 60.0,
    resume: bool = True,
) -> FeedConnection | FeedGroup:
    """Follow the feed at ``url`` in the background; returns at once.

    ``url`` is the app (``http://127.0.0.1:8000``, the default prefix is added),
    the feed prefix, or the stream URL; a list of them follows every one
    (a :class:`perfnb.feedgroup.FeedGroup`, counts per feed). Records go to
    ``stream`` (a :class:`perfnb.stream.Stream`, via ``extend``), to ``store`` (a
    :class:`perfnb.store.Store` or a folder: a writer is opened and closed with
    the connection; or a writer you own), and to ``sink`` one by one. ``token``
    defaults to ``PERFNB_TOKEN``. ``since="now"`` skips what the app already
    buffered on the first connection; ``last_event_id`` (a previous connection's
    :attr:`FeedConnection.last_event_id`) resumes right after it instead. A store
    that holds a resume point for the feed resumes it (``since`` ignored) unless
    ``resume=False``. ``backoff`` is the (first, longest) wait between attempts in
    seconds; ``read_timeout`` the longest silence (the feed sends a keep-alive
    every 15 s).

    >>> records = []
    >>> with connect("http://127.0.0.1:9", sink=records.append) as conn:
    ...     conn.wait_for(lambda c: c.connect_failures > 0, timeout=5)
    True
    """
    check_options(since, backoff)
    chosen = token if token is not None else os.environ.get("PERFNB_TOKEN") or None
    if not isinstance(url, str):
        from perfnb.feedgroup import FeedGroup

        if last_event_id:
            msg = "last_event_id: give it with one URL; with several, a store resumes each feed"
            raise ConfigError(msg)
        return FeedGroup(
            list(url),
            destinations(stream=stream, store=store, sink=sink),
            token=chosen,
            since=since,
            backoff=backoff,
            read_timeout=read_timeout,
            resume=resume,
        )
    key = feed_key(url)
    out = destinations(stream=stream, store=store, sink=sink)
    try:
        out.claim(key)
        return FeedConnection(
            url,
            destinations=out,
            token=chosen,
            since=since,
            backoff=backoff,
            read_timeout=read_timeout,
            on_close=out.finish,
            last_event_id=last_event_id or "",
            resume=resume,
        )
    except BaseException:
        out.finish()
        raise


def main_record(argv: Sequence[str]) -> int:
    """``perfnb record``; lives in :mod:`perfnb.recorder` (see there)."""
    from perfnb.recorder import main_record as run

    return run(argv)
