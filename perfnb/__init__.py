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
    from perfnb.analysis.health import HealthEngine
    from perfnb.analysis.healthconfig import HealthConfig
    from perfnb.analysis.sketch import LatencySketch
    from perfnb.analysis.watch import Watcher, watch
    from perfnb.collect.har import read_har
    from perfnb.collect.httpx import instrument, uninstrument
    from perfnb.feedclient import FeedConnection, connect
    from perfnb.feedgroup import FeedGroup
    from perfnb.load import Histogram, LoadRun, RunResult, run_load, run_single_user
    from perfnb.load.capacity import find_capacity
    from perfnb.load.impact import measure_impact
    from perfnb.report import build_report
    from perfnb.server import Monitor, PerfnbMiddleware, PerfnbWSGIMiddleware, timing
    from perfnb.store import Store, StoreWriter
    from perfnb.store.export import ExportResult, read_export
    from perfnb.stream import Stream, Subscription

__all__ = [
    "SCHEMA_VERSION",
    "ConfigError",
    "ExportResult",
    "FeedConnection",
    "FeedGroup",
    "HealthConfig",
    "HealthEngine",
    "Histogram",
    "LatencySketch",
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
    "Watcher",
    "build_report",
    "connect",
    "find_capacity",
    "instrument",
    "measure_impact",
    "read_export",
    "read_har",
    "run_load",
    "run_single_user",
    "timing",
    "uninstrument",
    "validate_record",
    "watch",
]

_LAZY = {
    "ExportResult": "perfnb.store.export",
    "FeedConnection": "perfnb.feedclient",
    "FeedGroup": "perfnb.feedgroup",
    "HealthConfig": "perfnb.analysis.healthconfig",
    "HealthEngine": "perfnb.analysis.health",
    "Histogram": "perfnb.load",
    "LatencySketch": "perfnb.analysis.sketch",
    "LoadRun": "perfnb.load",
    "Monitor": "perfnb.server",
    "PerfnbMiddleware": "perfnb.server",
    "PerfnbWSGIMiddleware": "perfnb.server",
    "RunResult": "perfnb.load",
    "Store": "perfnb.store",
    "StoreWriter": "perfnb.store",
    "Stream": "perfnb.stream",
    "Subscription": "perfnb.stream",
    "Watcher": "perfnb.analysis.watch",
    "build_report": "perfnb.report",
    "connect": "perfnb.feedclient",
    "find_capacity": "perfnb.load.capacity",
    "instrument": "perfnb.collect.httpx",
    "measure_impact": "perfnb.load.impact",
    "read_export": "perfnb.store.export",
    "read_har": "perfnb.collect.har",
    "run_load": "perfnb.load",
    "run_single_user": "perfnb.load",
    "timing": "perfnb.server",
    "uninstrument": "perfnb.collect.httpx",
    "watch": "perfnb.analysis.watch",
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
