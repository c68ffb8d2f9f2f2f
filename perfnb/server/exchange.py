"""One HTTP request seen by the ASGI middleware: its timings and the wrapped ``send``.

The middleware makes one :class:`HttpExchange` per request. The app gets its
bound :meth:`~HttpExchange.observe` as ``send``: a plain function that notes
what passes and returns the server's own awaitable, so observing a response
costs no coroutine of perfnb's. The same object is the request's
:class:`~perfnb.server.spans.RequestTimings` (spans and DB time), so a request
costs one allocation for all of its state.

>>> from perfnb.server.recording import Recorder
>>> rec = Recorder(service="shop", monitor=None, sink=None, prefix=None, token=None,
...                session_cookie=None, stream_routes=(), max_routes=10, sampler=None)
>>> cls = exchange_class(rec)
>>> sent = []
>>> async def send(message):
...     sent.append(message)
>>> ex = cls()
>>> ex.send, ex.t0, ex.rare = send, 0, False
>>> import asyncio
>>> asyncio.run(ex.observe({"type": "http.response.start", "status": 200, "headers": []}))
>>> sent[0]["headers"][0][0], ex.status
(b'server-timing', 200)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter_ns
from typing import Any, Final

from perfnb.server.recording import Exchange, Recorder, timing_value

__all__ = ["HttpExchange", "exchange_class"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

_SERVER_TIMING: Final = b"server-timing"
_START: Final = "http.response.start"
_BODY: Final = "http.response.body"


class HttpExchange(Exchange):
    """One HTTP request: its timings, and the wrapped ``send`` that observes the response.

    Each middleware makes a subclass of its own that carries its ``rec`` as a
    class attribute (:func:`exchange_class`), so creating an exchange costs no
    attribute writes for it. The middleware sets ``send``, ``t0`` and ``rare`` on
    every instance: fields read on every request are kept on the instance, as
    reading a class-level default takes the slow, unspecialised attribute path.
    """

    send: Send
    t0: int = 0
    error: BaseException | None = None
    beacon: bytes | None = None
    # ``rare`` (from RequestTimings) is also set when something else beyond the
    # common case happened (a beacon, an error, a streamed body) or an option
    # asks for more: the record needs the middleware's extras.
    # Size of the last body message (not yet in out_bytes and chunks).
    tail: int = 0
    # The recorder's cache of Server-Timing values (the same dict, never replaced;
    # the middleware sets it on each instance, where it is quicker to read).
    timing_values: dict[int, bytes]

    def observe(self, message: Message) -> Awaitable[None]:
        """The ``send`` the app sees: note what passes, hand the message on.

        On the response start it notes the time and status and adds a
        ``Server-Timing`` header. perfnb's value goes in a header line of its
        own, after any the app wrote: a list-valued field may be repeated (RFC
        9110, 5.3), and readers join the lines, so the app's timings are kept
        as they were. ``perfnb;dur`` is the mean cost perfnb added per request
        over the last measured second.

        The last body message is stamped as the app hands it over: the
        duration is the app's, to its last body byte, and stamping before
        the hand-over needs no coroutine to wait for the server.
        """
        mtype = message["type"]
        if mtype == _START:
            t = perf_counter_ns()
            self.start_ns = t
            try:
                status = self.status = message["status"]
                headers = self.headers = message.get("headers", ())
                if not self.rare:
                    app_us = (t - self.t0) // 1000
                    try:
                        value = self.timing_values[app_us]
                    except KeyError:
                        value = self.rec.timing_value_of(app_us)
                else:
                    value = timing_value(t - self.t0, self.rec.own_ns_mean, self)
                if len(message) == 3 and headers:
                    # The usual shape (type, status, headers): a literal is the cheapest copy.
                    message = {
                        "type": _START,
                        "status": status,
                        "headers": [*headers, (_SERVER_TIMING, value)],
                    }
                else:
                    message = {**message, "headers": [*headers, (_SERVER_TIMING, value)]}
            except Exception:
                self.rec.internal_error()
            return self.send(message)
        if mtype == _BODY:
            if message.get("more_body"):
                return self._chunk(message)
            # Added to out_bytes (and chunks) when the request's entry is made.
            self.tail = len(message.get("body") or b"")
            self.end_ns = perf_counter_ns()
        elif mtype == "http.response.pathsend" or mtype == "http.response.zerocopysend":
            self.end_ns = perf_counter_ns()
        return self.send(message)

    def observe_timed(self, message: Message) -> Awaitable[None]:
        """:meth:`observe` that adds its own cost to ``own_ns`` (measured requests)."""
        t = perf_counter_ns()
        sent = self.observe(message)
        self.own_ns += perf_counter_ns() - t
        return sent

    def _chunk(self, message: Message) -> Awaitable[None]:
        body = message.get("body")
        if body:
            self.chunks += 1
            self.out_bytes += len(body)
            if not self.first_ns:
                self.first_ns = perf_counter_ns()
                self.rare = True
        return self.send(message)


def exchange_class(rec: Recorder) -> type[HttpExchange]:
    """A subclass of :class:`HttpExchange` bound to ``rec`` (one per middleware)."""

    class _Exchange(HttpExchange):
        pass

    _Exchange.rec = rec
    _Exchange.timing_values = rec.timing_values
    return _Exchange
