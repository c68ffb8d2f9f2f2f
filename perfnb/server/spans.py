"""Per-request timings: the spans an app opens with :func:`timing`, and DB time.

The middleware puts one :class:`RequestTimings` in a context variable for each
request it serves. Code running for that request — async handlers, sync handlers
in a thread pool (Starlette and anyio copy the context), WSGI views, DB event
listeners — finds it there and adds to it; the middleware writes the totals into
the response's ``Server-Timing`` header and the request's record.

Outside a monitored request :func:`timing` still times its block but keeps the
result to itself, so instrumented code runs unchanged in scripts and tests.

>>> with timing("render") as span:
...     total = sum(range(1000))
>>> span.duration_ms >= 0
True
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from functools import lru_cache
from time import perf_counter_ns
from types import TracebackType
from typing import Final

from perfnb.errors import ConfigError

__all__ = ["MAX_SPANS", "RequestTimings", "Span", "current_timings", "timing"]

#: Distinct span names kept per request; more are dropped so the header stays small.
MAX_SPANS: Final = 32

# Names the middleware writes itself; a span of the same name would be ambiguous.
_RESERVED: Final = frozenset({"app", "perfnb"})
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")


class RequestTimings:
    """What code running for one request has measured: spans by name, DB time.

    ``spans`` maps a span name to its summed duration in nanoseconds, in the order
    the names first closed; ``db_ns`` and ``db_count`` are the time and number of
    database calls. Subclassed by the middleware, which keeps its per-request
    state in the same object so a request costs one allocation.

    The fields start as class-level defaults rather than being set in an
    ``__init__``: creating one per request then costs no Python call.
    """

    spans: dict[str, int] | None = None
    db_ns: int = 0
    db_count: int = 0
    #: Set once anything beyond the common case is measured (a span, DB time):
    #: the middleware's one test for "the header and record need more".
    rare: bool = False

    def add_span(self, name: str, duration_ns: int) -> None:
        """Add ``duration_ns`` to the span ``name`` (``"db"`` adds to the DB time)."""
        if name == "db":
            self.add_db(duration_ns)
            return
        self.rare = True
        spans = self.spans
        if spans is None:
            self.spans = {name: duration_ns}
        elif name in spans:
            spans[name] += duration_ns
        elif len(spans) < MAX_SPANS:
            spans[name] = duration_ns

    def add_db(self, duration_ns: int) -> None:
        """Add one database call of ``duration_ns`` to the DB time."""
        self.rare = True
        self.db_ns += duration_ns
        self.db_count += 1


_current: ContextVar[RequestTimings | None] = ContextVar("perfnb_request_timings", default=None)


def current_timings() -> RequestTimings | None:
    """The timings of the request being served in this context, or ``None`` outside one."""
    return _current.get()


class Span:
    """A timed block; use it through :func:`timing` with ``with`` or ``async with``.

    After the block, :attr:`duration_ms` holds its duration in milliseconds.
    """

    __slots__ = ("_start", "_timings", "duration_ms", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.duration_ms = 0.0
        self._start = 0
        self._timings: RequestTimings | None = None

    def __enter__(self) -> Span:
        self._timings = _current.get()
        self._start = perf_counter_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = perf_counter_ns() - self._start
        self.duration_ms = elapsed / 1e6
        timings = self._timings
        if timings is not None:
            timings.add_span(self.name, elapsed)
            self._timings = None

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


@lru_cache(maxsize=1024)
def _valid_name(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None and name not in _RESERVED


def timing(name: str) -> Span:
    """Time a block and add it to the current request's ``Server-Timing`` header.

    ``name`` must be an HTTP token of at most 64 characters (letters, digits and
    ``!#$%&'*+-.^_`|~``); ``"app"`` and ``"perfnb"`` are the middleware's own.
    ``timing("db")`` adds to the request's database time, so any driver can feed
    ``db``. Spans may nest, and the same name used several times is summed. Works
    in sync and async code (``with`` or ``async with``).

    >>> with timing("render"):
    ...     pass
    >>> timing("my span")
    Traceback (most recent call last):
    ...
    perfnb.errors.ConfigError: timing(name): got 'my span'; expected an HTTP token of 1-64 characters (letters, digits and !#$%&'*+-.^_`|~), not 'app' or 'perfnb'
    """  # noqa: E501
    if not isinstance(name, str) or not _valid_name(name):
        msg = (
            f"timing(name): got {name!r}; expected an HTTP token of 1-64 characters "
            "(letters, digits and !#$%&'*+-.^_`|~), not 'app' or 'perfnb'"
        )
        raise ConfigError(msg)
    return Span(name)
