"""Several feeds followed at once, into the same destinations: ``connect([url, ...])``.

Each feed has its own :class:`~perfnb.feedclient.FeedConnection` (its own thread,
resume point, backoff and counts); the group shares one store writer, stream and
sink between them, sums their counters, and waits on any of them.

>>> from perfnb.feedclient import connect
>>> group = connect(["http://127.0.0.1:9", "http://127.0.0.1:10"], sink=print)
>>> sorted(group.feeds)
['http://127.0.0.1:10/api/performance-metrics/stream', 'http://127.0.0.1:9/api/performance-metrics/stream']
>>> group.close()
>>> group.stats()["received"]
0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from perfnb._closing import Closing
from perfnb.errors import ConfigError, PerfnbError
from perfnb.feedclient import FeedConnection
from perfnb.feedcounts import missed
from perfnb.feedsinks import Destinations
from perfnb.feedtargets import feed_key

__all__ = ["FeedGroup"]

_SUMMED = (
    "received",
    "dropped",
    "reconnects",
    "streams",
    "invalid",
    "duplicates",
    "boot_changes",
    "connect_failures",
    "sink_errors",
    "outages",
    "store_errors",
)


class FeedGroup(Closing):
    """Feeds followed together; made by :func:`perfnb.connect` given a list of URLs.

    ``feeds`` maps each feed's name (:attr:`FeedConnection.key`) to its
    connection. The counters are the feeds' sums; :meth:`stats` gives them and
    each feed's own under ``"feeds"``.
    """

    def __init__(
        self,
        urls: Sequence[str],
        out: Destinations,
        *,
        token: str | None,
        since: str,
        backoff: tuple[float, float],
        read_timeout: float,
        resume: bool = True,
    ) -> None:
        self._out = out
        self._changed = threading.Condition(threading.RLock())
        self._closed = False
        self.feeds: dict[str, FeedConnection] = {}
        try:
            if not urls:
                msg = "url: got an empty list; expected one feed URL or more"
                raise ConfigError(msg)
            keys: dict[str, str] = {}
            for url in urls:
                key = feed_key(url)
                if key in keys:
                    msg = f"url: {url!r} and {keys[key]!r} are the same feed ({key})"
                    raise ConfigError(msg)
                keys[key] = url
            for key in keys:
                out.claim(key)
            for key, url in keys.items():
                self.feeds[key] = FeedConnection(
                    url,
                    destinations=out,
                    token=token,
                    since=since,
                    backoff=backoff,
                    read_timeout=read_timeout,
                    resume=resume,
                    changed=self._changed,
                )
        except BaseException:
            self.close()
            raise

    def _sum(self, name: str) -> int:
        return sum(int(getattr(conn, name)) for conn in self.feeds.values())

    @property
    def received(self) -> int:
        """Records delivered, all feeds together."""
        return self._sum("received")

    @property
    def dropped(self) -> int:
        """Records the apps' buffers overwrote before they were read, all feeds together."""
        return self._sum("dropped")

    @property
    def reconnects(self) -> int:
        return self._sum("reconnects")

    @property
    def invalid(self) -> int:
        return self._sum("invalid")

    @property
    def boot_changes(self) -> int:
        return self._sum("boot_changes")

    @property
    def connect_failures(self) -> int:
        return self._sum("connect_failures")

    @property
    def connected(self) -> bool:
        """Whether every feed has a stream open."""
        return bool(self.feeds) and all(c.connected for c in self.feeds.values())

    @property
    def running(self) -> bool:
        """Whether any feed is still followed."""
        return any(c.running for c in self.feeds.values())

    @property
    def errors(self) -> dict[str, PerfnbError]:
        """The feeds that stopped for good (refused token, no feed there), and why."""
        return {key: c.error for key, c in self.feeds.items() if c.error is not None}

    def missed(self) -> str:
        """What the feeds missed together, in words (``0 missed`` only when true)."""
        return missed(self.dropped, self.boot_changes)

    def stats(self) -> dict[str, object]:
        """The summed counters, and each feed's :meth:`FeedConnection.stats` under ``feeds``."""
        with self._changed:
            feeds = {key: conn.stats() for key, conn in self.feeds.items()}
        out: dict[str, object] = {
            name: sum(int(s[name]) for s in feeds.values())  # type: ignore[call-overload]
            for name in _SUMMED
        }
        out["connected"] = self.connected
        out["feeds"] = feeds
        return out

    def wait_for(self, predicate: Callable[[FeedGroup], bool], *, timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked on every event of any feed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return predicate(self)
                self._changed.wait(min(remaining, 0.5))
        return True

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop every feed, then flush and close the store writer it opened. Idempotent."""
        if self._closed:
            return
        for conn in self.feeds.values():
            conn.stop(timeout=timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._out.finish()

    def __repr__(self) -> str:
        return (
            f"<FeedGroup {len(self.feeds)} feeds received={self.received} "
            f"dropped={self.dropped} connected={self.connected}>"
        )
