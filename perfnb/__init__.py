"""perfnb: watch a web application's performance live in JupyterLab, load-test it, and
write the post-mortem — from one record schema, a Parquet store and a live stream.

The names below are the public surface. They load on first use, so ``import perfnb``
stays light (the server side never pulls in pandas or pyarrow through it).

>>> import perfnb
>>> perfnb.SCHEMA_VERSION
1
>>> perfnb.Store.__module__
'perfnb.store.store'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from perfnb.errors import (
    ConfigError,
    PerfnbError,
    PerfnbWarning,
    RecordError,
    SafetyError,
    StoreError,
    TargetError,
)
from perfnb.schema import SCHEMA_VERSION, Record, Sink, validate_record

if TYPE_CHECKING:
    from perfnb.collect.httpx import instrument, uninstrument
    from perfnb.feedclient import FeedConnection, connect
    from perfnb.load import Histogram, LoadRun, RunResult, run_load, run_single_user
    from perfnb.load.capacity import find_capacity
    from perfnb.server import Monitor, PerfnbMiddleware, PerfnbWSGIMiddleware, timing
    from perfnb.store import Store, StoreWriter
    from perfnb.stream import Stream, Subscription

__all__ = [
    "SCHEMA_VERSION",
    "ConfigError",
    "FeedConnection",
    "Histogram",
    "LoadRun",
    "Monitor",
    "PerfnbError",
    "PerfnbMiddleware",
    "PerfnbWSGIMiddleware",
    "PerfnbWarning",
    "Record",
    "RecordError",
    "RunResult",
    "SafetyError",
    "Sink",
    "Store",
    "StoreError",
    "StoreWriter",
    "Stream",
    "Subscription",
    "TargetError",
    "connect",
    "find_capacity",
    "instrument",
    "run_load",
    "run_single_user",
    "timing",
    "uninstrument",
    "validate_record",
]

_LAZY = {
    "FeedConnection": "perfnb.feedclient",
    "Histogram": "perfnb.load",
    "LoadRun": "perfnb.load",
    "Monitor": "perfnb.server",
    "PerfnbMiddleware": "perfnb.server",
    "PerfnbWSGIMiddleware": "perfnb.server",
    "RunResult": "perfnb.load",
    "Store": "perfnb.store",
    "StoreWriter": "perfnb.store",
    "Stream": "perfnb.stream",
    "Subscription": "perfnb.stream",
    "connect": "perfnb.feedclient",
    "find_capacity": "perfnb.load.capacity",
    "instrument": "perfnb.collect.httpx",
    "run_load": "perfnb.load",
    "run_single_user": "perfnb.load",
    "timing": "perfnb.server",
    "uninstrument": "perfnb.collect.httpx",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'perfnb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
