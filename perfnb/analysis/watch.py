"""Live health: a :class:`~perfnb.analysis.health.HealthEngine` wired to a stream.

:func:`watch` subscribes an engine to a :class:`~perfnb.stream.Stream` and sends
every health transition and alert it produces:

- back into the stream (so dashboards and stores subscribed to it see them; the
  watcher ignores its own records when they come round again);
- to ``store`` (a :class:`~perfnb.store.Store`: a writer is opened and closed with
  the watcher; or a writer or any object with ``extend``/``append`` you own).
  Leave it out when something already writes the stream to the store (the
  records pushed back into the stream reach it that way);
- to ``on_alert(record)`` for each alert, on the watcher's thread; an exception
  there is caught and counted in :attr:`Watcher.callback_errors`, never fatal;
- to ``webhook``: each alert POSTed as JSON (the record's wire form) from a
  thread of its own, through a bounded queue (alerts beyond it are counted in
  ``webhook_dropped``; failures in ``webhook_failed``). The URL's host must be in
  ``allowed_hosts`` (loopback only by default), checked before anything starts.

A ticker moves the engine's clock on every ``tick`` seconds when no records
arrive, so a silent app still has its windows judged (a runaway that stopped,
an alert that cleared).

>>> from perfnb.stream import Stream
>>> alerts = []
>>> with Stream() as stream, watch(stream, on_alert=alerts.append) as watcher:
...     watcher.engine.states["serverResponse"].state
'unknown'
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from perfnb._closing import Closing
from perfnb.analysis.health import HealthEngine, HealthState
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.errors import ConfigError
from perfnb.schema import Record, record_to_json

__all__ = ["LOOPBACK_HOSTS", "Watcher", "watch"]

_log = logging.getLogger("perfnb.analysis.watch")

#: The hosts a webhook may reach unless ``allowed_hosts`` says otherwise.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_OWN_KINDS = frozenset({"health", "alert"})


class _Subscribable(Protocol):
    def subscribe(self, callback: Callable[[list[Record]], None], *, every: float) -> Any: ...

    def extend(self, records: list[Record]) -> Any: ...


def check_webhook(url: str, allowed_hosts: Collection[str]) -> str:
    """The webhook URL if its scheme is http(s) and its host is allowed; else ConfigError.

    >>> check_webhook("http://127.0.0.1:9/hook", LOOPBACK_HOSTS)
    'http://127.0.0.1:9/hook'
    >>> check_webhook("https://example.com/hook", LOOPBACK_HOSTS)
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: webhook: host 'example.com' of 'https://example.com/hook' is not allowed; allowed hosts: 127.0.0.1, ::1, localhost (add it to allowed_hosts=)
    """  # noqa: E501 - a doctest shows the whole message
    if not isinstance(url, str):
        raise ConfigError(f"webhook: got {url!r}; expected an http(s) URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"webhook: got {url!r}; expected an http:// or https:// URL with a host")
    allowed = {h.lower().strip("[]") for h in allowed_hosts}
    if host.lower() not in allowed:
        raise ConfigError(
            f"webhook: host {host!r} of {url!r} is not allowed; allowed hosts: "
            f"{', '.join(sorted(allowed))} (add it to allowed_hosts=)"
        )
    return url


class _Webhook:
    """POSTs alerts from its own thread; a bounded queue, counted failures."""

    def __init__(self, url: str, *, max_queue: int, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.sent = self.failed = self.dropped = 0
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="perfnb-webhook", daemon=True)
        self._thread.start()

    def put(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        import httpx  # only a watcher with a webhook needs it

        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while True:
                record = self._queue.get()
                if record is None:
                    return
                try:
                    reply = client.post(self.url, json=record_to_json(record))
                    if 200 <= reply.status_code < 300:
                        self.sent += 1
                    else:
                        self.failed += 1
                except Exception:
                    self.failed += 1

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return  # a stuck endpoint: the daemon thread dies with the process
        self._thread.join(max(0.0, deadline - time.monotonic()))


class Watcher(Closing):
    """What :func:`watch` returns: the engine, what it produced, and the counters.

    ``alerts``: the latest alert records (raised and cleared, oldest first, at most
    1000); ``callback_errors``: ``on_alert`` calls that raised; ``store_errors``:
    writes that failed; ``webhook_sent`` / ``webhook_failed`` / ``webhook_dropped``.
    """

    def __init__(
        self,
        stream: _Subscribable,
        engine: HealthEngine,
        *,
        store: Any = None,
        on_alert: Callable[[Record], object] | None = None,
        webhook: _Webhook | None = None,
        every: float,
        tick: float,
    ) -> None:
        self.engine = engine
        self.alerts: deque[Record] = deque(maxlen=1000)
        self.callback_errors = 0
        self.store_errors = 0
        self._stream = stream
        self._on_alert = on_alert
        self._webhook = webhook
        try:
            self._writer, self._owned = _writer_of(store)
        except ConfigError:
            if webhook is not None:
                webhook.close(1.0)
            raise
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscription = stream.subscribe(self._on_records, every=every)
        self._ticker = threading.Thread(
            target=self._tick_loop, args=(tick,), name="perfnb-health-tick", daemon=True
        )
        self._ticker.start()

    @property
    def states(self) -> dict[str, HealthState]:
        """The engine's health states now (read safely while it runs)."""
        with self._lock:
            return self.engine.states

    @property
    def active_alerts(self) -> list[Record]:
        """Alerts raised and not cleared yet."""
        with self._lock:
            return self.engine.active_alerts

    @property
    def baselines(self) -> dict[str, tuple[float, float, int]]:
        """The engine's per-route baselines (see :attr:`HealthEngine.baselines`)."""
        with self._lock:
            return self.engine.baselines

    @property
    def webhook_sent(self) -> int:
        """Alerts the webhook accepted (2xx)."""
        return self._webhook.sent if self._webhook else 0

    @property
    def webhook_failed(self) -> int:
        """Alerts the webhook refused or could not be reached for."""
        return self._webhook.failed if self._webhook else 0

    @property
    def webhook_dropped(self) -> int:
        """Alerts not sent because the webhook's queue was full."""
        return self._webhook.dropped if self._webhook else 0

    def _on_records(self, batch: list[Record]) -> None:
        mine = [
            r for r in batch if not (r.get("source") == "perfnb" and r.get("kind") in _OWN_KINDS)
        ]
        with self._lock:
            if self._stop.is_set():
                return
            out = self.engine.observe(mine)
            self._send(out)

    def _tick_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self._stop.is_set():
                    return
                self._send(self.engine.tick())

    def _send(self, out: list[Record]) -> None:
        if not out:
            return
        self._stream.extend(out)
        if self._writer is not None:
            try:
                self._writer(out)
            except Exception:
                self.store_errors += 1
                _log.exception("writing health records to the store failed")
        for record in out:
            if record["kind"] != "alert":
                continue
            self.alerts.append(record)
            if self._on_alert is not None:
                try:
                    self._on_alert(record)
                except Exception:
                    self.callback_errors += 1
                    if self.callback_errors == 1:
                        _log.exception("on_alert raised (counted in Watcher.callback_errors)")
            if self._webhook is not None:
                self._webhook.put(record)

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop watching: judge what is pending, then close the writer and the webhook."""
        if self._stop.is_set():
            return
        self._subscription.close(timeout=timeout)
        with self._lock:
            self._stop.set()
        self._ticker.join(timeout)
        if self._owned is not None:
            try:
                self._owned.close()
            except Exception:
                self.store_errors += 1
                _log.exception("closing the store writer failed")
        if self._webhook is not None:
            self._webhook.close(timeout)


def _writer_of(store: Any) -> tuple[Callable[[list[Record]], object] | None, Any]:
    """How to write a batch to ``store``, and the writer the watcher opened (to close)."""
    if store is None:
        return None, None
    if hasattr(store, "writer") and callable(store.writer):
        writer = store.writer()
        return writer.extend, writer
    if hasattr(store, "extend"):
        return store.extend, None
    if hasattr(store, "append"):
        append = store.append

        def each(records: list[Record]) -> None:
            for record in records:
                append(record)

        return each, None
    raise ConfigError(
        f"store: got {type(store).__name__}; expected a Store, a writer, or an object with "
        "extend() or append()"
    )


def watch(
    stream: _Subscribable,
    *,
    config: HealthConfig | Mapping[str, Any] | None = None,
    store: Any = None,
    on_alert: Callable[[Record], object] | None = None,
    webhook: str | None = None,
    allowed_hosts: Collection[str] = LOOPBACK_HOSTS,
    service: str | None = None,
    every: float = 0.5,
    tick: float = 1.0,
    webhook_queue: int = 100,
    webhook_timeout: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> Watcher:
    """Judge health live from ``stream``; returns a :class:`Watcher` (close it when done).

    ``config``: a :class:`HealthConfig` or a dict of its keys. ``every``: how often
    the stream delivers batches (s); ``tick``: how often the clock moves on without
    records. See the module docs for ``store``, ``on_alert`` and ``webhook``.

    >>> from perfnb.stream import Stream
    >>> watch(Stream(), webhook="http://10.0.0.1/hook")
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: webhook: host '10.0.0.1' of 'http://10.0.0.1/hook' is not allowed; allowed hosts: 127.0.0.1, ::1, localhost (add it to allowed_hosts=)
    """  # noqa: E501 - a doctest shows the whole message
    if isinstance(config, Mapping):
        config = HealthConfig.from_mapping(config)
    elif config is not None and not isinstance(config, HealthConfig):
        raise ConfigError(
            f"config: got {type(config).__name__}; expected a HealthConfig or a dict of its keys"
        )
    for name, value in (("every", every), ("tick", tick), ("webhook_timeout", webhook_timeout)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 3600:
            raise ConfigError(f"{name}: got {value!r}; expected seconds > 0 and < 3600")
    if isinstance(webhook_queue, bool) or not isinstance(webhook_queue, int) or webhook_queue < 1:
        raise ConfigError(f"webhook_queue: got {webhook_queue!r}; expected an integer ≥ 1")
    if on_alert is not None and not callable(on_alert):
        raise ConfigError(f"on_alert: got {on_alert!r}; expected a callable taking a record")
    hook = None
    if webhook is not None:
        url = check_webhook(webhook, allowed_hosts)
        hook = _Webhook(url, max_queue=webhook_queue, timeout=float(webhook_timeout))
    engine = HealthEngine(config, clock=clock, service=service)
    return Watcher(
        stream,
        engine,
        store=store,
        on_alert=on_alert,
        webhook=hook,
        every=float(every),
        tick=float(tick),
    )
