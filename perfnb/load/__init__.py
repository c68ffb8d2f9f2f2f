"""Load tests: scenarios, shapes, the lean HTTP engine, safety limits and worker processes.

>>> from perfnb.load import ConstantRate, Endpoint, Endpoints
>>> ConstantRate(100, duration=5).model
'open'
"""

from __future__ import annotations

from perfnb.load.engine import RUN_HEADER, Client, Response, Target, check_target
from perfnb.load.histogram import Histogram
from perfnb.load.result import RouteSummary, RunResult
from perfnb.load.runner import LoadRun, run_load
from perfnb.load.safety import Limits, StopEvent
from perfnb.load.scenarios import (
    Endpoint,
    Endpoints,
    Journey,
    Session,
    endpoints_from_openapi,
    run_single_user,
)
from perfnb.load.shapes import ConstantRate, RampingRate, Shape, Stages, Users

__all__ = [
    "RUN_HEADER",
    "Client",
    "ConstantRate",
    "Endpoint",
    "Endpoints",
    "Histogram",
    "Journey",
    "Limits",
    "LoadRun",
    "RampingRate",
    "Response",
    "RouteSummary",
    "RunResult",
    "Session",
    "Shape",
    "Stages",
    "StopEvent",
    "Target",
    "Users",
    "check_target",
    "endpoints_from_openapi",
    "run_load",
    "run_single_user",
]
