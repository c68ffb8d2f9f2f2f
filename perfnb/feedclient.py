"""Follow an app's perfnb feed: into a live Stream, a Store, or any sink.

:func:`connect` opens the feed (``GET <prefix>/stream``, Server-Sent Events) from
a background thread with its own event loop, so a notebook's kernel is never
blocked. It reconnects with ``Last-Event-ID`` after the connection drops or the
app restarts (backing off up to a bound), and counts exactly what it received,
what the app's buffer dropped before it could be read, and how often it had to
reconnect.

``perfnb record URL --store DIR`` (:func:`main_record`) does the same into a
Parquet store until SIGINT or SIGTERM, then flushes and exits 0.

>>> conn = connect("http://127.0.0.1:9/api/performance-metrics", sink=[].append)
>>> conn.close()
>>> conn.stats()["received"]
0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from perfnb._closing import Closing
from perfnb.errors import ConfigError, PerfnbError, RecordError
from perfnb.eventstream import SSEEvent, SSEParser
from perfnb.feedsinks import Extends, StoreLike, Writer, destinations
from perfnb.schema import Record, Sink, record_from_json

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

#: The feed's prefix when a URL names only the app (``http://host:port``).
DEFAULT_PREFIX = "/api/performance-metrics"


def feed_stream_url(url: str) -> str:
    """The stream URL for a feed URL, an app URL, or a stream URL.

    >>> feed_stream_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/api/performance-metrics/stream'
    >>> feed_stream_url("http://127.0.0.1:8000/perf/")
    'http://127.0.0.1:8000/perf/stream'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"url: got {url!r}; expected http://host:port[/prefix]"
        raise ConfigError(msg)
    path = parts.path.rstrip("/")
    if not path:
        path = DEFAULT_PREFIX
    if not path.endswith("/stream"):
        path += "/stream"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


@dataclass
class _Counts:
    received: int = 0
    dropped: int = 0
    reconnects: int = 0
    streams: int = 0
    invalid: int = 0
    duplicates: int = 0
    boot_changes: int = 0
    connect_failures: int = 0
    sink_errors: int = 0


class _Fatal(Exception):
    pass


class FeedConnection(Closing):
    """A feed followed from a background thread; see :func:`connect`.

    Counters (exact, readable any time): ``received`` records delivered,
    ``dropped`` records the app's buffer overwrote before this client read them
    (as the feed reported), ``reconnects`` streams reopened after an error or a
    lost connection, ``invalid`` records that failed the schema, ``boot_changes``
    app restarts without a spool (what the old process still held then is lost
    and cannot be counted), ``sink_errors`` deliveries that raised.
    """

    def __init__(
        self,
        url: str,
        *,
        sinks: Sequence[Callable[[list[Record]], object]],
        token: str | None,
        since: str,
        backoff: tuple[float, float],
        read_timeout: float,
        on_close: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        last_event_id: str = "",
    ) -> None:
        self.url = feed_stream_url(url)
        self._sinks = list(sinks)
        self._token = token
        self._since = since
        self._backoff = backoff
        self._read_timeout = read_timeout
        self._on_close = on_close
        self._transport = transport
        self._counts = _Counts()
        # Re-entrant: wait_for's predicate may read stats() while holding it.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
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
        """All counters, the last event id and whether a stream is open."""
        with self._lock:
            out: dict[str, object] = dict(self._counts.__dict__)
            out.update(
                last_event_id=self.last_event_id,
                connected=self.connected,
                error=None if self.error is None else str(self.error),
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

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop following, then flush and close the store writer it opened. Idempotent."""
        if self._closed:
            return
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
        if self._on_close is not None:
            self._on_close()

    def __repr__(self) -> str:
        c = self._counts
        return (
            f"<FeedConnection {self.url} received={c.received} dropped={c.dropped} "
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
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
            delay = self._backoff[0]
            # Set when a stream broke or an attempt failed: the next stream that
            # opens after an earlier one counts as a reconnect.
            trouble = False
            while not self._stopping:
                try:
                    opened = time.monotonic()
                    events = await self._follow(client, reconnect=trouble)
                    trouble = False
                    if events or time.monotonic() - opened >= 1.0:
                        delay = self._backoff[0]
                        continue  # the app ended the stream on schedule: resume at once
                    # An empty stream that ended at once (an app shutting down, a
                    # closed monitor): wait before asking again rather than spin.
                except _Fatal as exc:
                    self.error = ConfigError(str(exc))
                    log.error("%s", exc)
                    return
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    trouble = True
                    if self.connected:
                        delay = self._backoff[0]
                    else:
                        self._bump(connect_failures=1)
                    log.info("feed %s: %s; retrying in %.2fs", self.url, _describe(exc), delay)
                finally:
                    with self._changed:
                        self.connected = False
                        self._changed.notify_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])

    async def _follow(self, client: httpx.AsyncClient, *, reconnect: bool) -> int:
        """One stream, from opening until the app ends it (errors propagate).

        Returns how many ``records`` and ``dropped`` events it carried.
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
                raise _Fatal(f"feed {self.url}: the app answered {status}; {hint}")
            if status != 200:
                msg = f"the app answered {status}"
                raise httpx.HTTPError(msg)
            with self._changed:
                self.connected = True
                if reconnect and self._counts.streams:
                    self._counts.reconnects += 1
                self._counts.streams += 1
                self._changed.notify_all()
            parser = SSEParser(last_event_id=self.last_event_id)
            carried = 0
            async for chunk in response.aiter_bytes():
                for found in parser.feed(chunk):
                    self._handle(found)
                    carried += found.event != "hello"
        return carried

    def _handle(self, found: SSEEvent) -> None:
        try:
            doc = json.loads(found.data)
        except ValueError:
            log.warning("feed %s: an event that is not JSON was ignored", self.url)
            return
        if not isinstance(doc, dict):
            return
        if found.event == "hello":
            self._hello(doc)
        elif found.event == "records":
            self._records(doc, found.last_event_id)
        elif found.event == "dropped":
            missed = doc.get("dropped")
            if isinstance(missed, int) and missed > 0:
                log.warning(
                    "feed %s: %d records missed (numbers %s..%s): this client fell behind "
                    "the app's buffer",
                    self.url,
                    missed,
                    doc.get("first_missing"),
                    doc.get("last_missing"),
                )
                with self._changed:
                    self._counts.dropped += missed
                    self.last_event_id = found.last_event_id
                    self._changed.notify_all()

    def _hello(self, doc: dict[str, Any]) -> None:
        boot = doc.get("boot")
        previous = doc.get("previous_boot")
        if isinstance(previous, str) and not doc.get("resumed"):
            self._bump(boot_changes=1)
            log.warning(
                "feed %s: the app restarted without its spool (boot %s -> %s); what it "
                "still held after event %s is lost and cannot be counted",
                self.url,
                previous,
                boot,
                self.last_event_id,
            )
        if isinstance(boot, str):
            self.boot = boot

    def _records(self, doc: dict[str, Any], event_id: str) -> None:
        items = doc.get("records")
        if not isinstance(items, list):
            return
        if _seq(event_id) is not None and _same_boot(event_id, self.last_event_id):
            last_seen = _seq(self.last_event_id) or 0
            if (_seq(event_id) or 0) <= last_seen:
                self._bump(duplicates=len(items))
                return
        records: list[Record] = []
        invalid = 0
        for item in items:
            try:
                records.append(record_from_json(item))
            except RecordError:
                invalid += 1
        sink_errors = 0
        for deliver in self._sinks:
            try:
                deliver(records)
            except Exception as exc:
                sink_errors += 1
                log.error("feed %s: delivering %d records failed: %s", self.url, len(records), exc)
        with self._changed:
            self._counts.received += len(records)
            self._counts.invalid += invalid
            self._counts.sink_errors += sink_errors
            self.last_event_id = event_id
            self._changed.notify_all()


def _seq(event_id: str) -> int | None:
    _, sep, seq = event_id.rpartition(":")
    return int(seq) if sep and seq.isdigit() else None


def _same_boot(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a.rpartition(":")[0] == b.rpartition(":")[0]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def connect(
    url: str,
    *,
    stream: Extends | None = None,
    store: StoreLike | Writer | str | os.PathLike[str] | None = None,
    sink: Sink | None = None,
    token: str | None = None,
    since: str = "oldest",
    last_event_id: str | None = None,
    backoff: tuple[float, float] = (0.25, 5.0),
    read_timeout: float = 60.0,
) -> FeedConnection:
    """Follow the feed at ``url`` in the background; returns at once.

    ``url`` is the app (``http://127.0.0.1:8000``, the default prefix is added),
    the feed prefix, or the stream URL. Records go to ``stream`` (a
    :class:`perfnb.stream.Stream`, via ``extend``), to ``store`` (a
    :class:`perfnb.store.Store` or a folder: a writer is opened and closed with
    the connection; or a writer you own), and to ``sink`` one by one. ``token``
    defaults to ``PERFNB_TOKEN``. ``since="now"`` skips what the app already
    buffered on the first connection; ``last_event_id`` (a previous connection's
    :attr:`FeedConnection.last_event_id`) resumes right after it instead.
    ``backoff`` is the (first, longest) wait between attempts in seconds;
    ``read_timeout`` the longest silence (the feed sends a keep-alive every 15 s).

    >>> records = []
    >>> with connect("http://127.0.0.1:9", sink=records.append) as conn:
    ...     conn.wait_for(lambda c: c.connect_failures > 0, timeout=5)
    True
    """
    if since not in ("oldest", "now"):
        msg = f"since: got {since!r}; expected 'oldest' or 'now'"
        raise ConfigError(msg)
    low, high = backoff
    if not 0 < low <= high:
        msg = f"backoff: got {backoff!r}; expected (first, longest) with 0 < first ≤ longest"
        raise ConfigError(msg)
    sinks, finish = destinations(stream=stream, store=store, sink=sink)

    chosen = token if token is not None else os.environ.get("PERFNB_TOKEN") or None
    return FeedConnection(
        url,
        sinks=sinks,
        token=chosen,
        since=since,
        backoff=backoff,
        read_timeout=read_timeout,
        on_close=finish,
        last_event_id=last_event_id or "",
    )


def main_record(argv: Sequence[str]) -> int:
    """``perfnb record``; lives in :mod:`perfnb.recorder` (see there)."""
    from perfnb.recorder import main_record as run

    return run(argv)
