"""The server side: middleware for the monitored app, its monitor, spans and adapters.

Everything here is light enough for a production app: the standard library,
the record schema and Server-Timing; never pandas or pyarrow.

>>> from starlette.applications import Starlette
>>> from perfnb.server import PerfnbMiddleware, timing
>>> app = PerfnbMiddleware(Starlette(), service="shop")
>>> with timing("render"):
...     pass
"""

from __future__ import annotations

from perfnb.server.asgi import PerfnbMiddleware
from perfnb.server.monitor import Monitor
from perfnb.server.routes import UNMATCHED, DjangoRouteMiddleware
from perfnb.server.sampler import ProcessSampler
from perfnb.server.spans import timing
from perfnb.server.sqlalchemy import instrument_engine
from perfnb.server.wsgi import PerfnbWSGIMiddleware

__all__ = [
    "UNMATCHED",
    "DjangoRouteMiddleware",
    "Monitor",
    "PerfnbMiddleware",
    "PerfnbWSGIMiddleware",
    "ProcessSampler",
    "instrument_engine",
    "timing",
]
