"""Two apps as they are deployed behind multi-process servers, monitored by perfnb.

``flask_app`` (WSGI, for gunicorn's sync and gthread workers) and ``starlette_app``
(ASGI, for gunicorn's uvicorn workers and ``uvicorn --workers``). Each answers
``GET /hello/{n}`` and ``GET /pid``; the fleet directory comes from
``PERFNB_FLEET_DIR``, as a deployment would set it.
"""

from __future__ import annotations

import os

from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perfnb.server import PerfnbMiddleware, PerfnbWSGIMiddleware

_flask = Flask("fleet_flask")


@_flask.get("/hello/<int:n>")
def _hello(n: int) -> str:
    return f"hello {n}"


@_flask.get("/pid")
def _pid() -> str:
    return str(os.getpid())


flask_app = PerfnbWSGIMiddleware(_flask, service="flask-fleet")


async def _star_hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.path_params['n']}")


async def _star_pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


starlette_app = PerfnbMiddleware(
    Starlette(routes=[Route("/hello/{n}", _star_hello), Route("/pid", _star_pid)]),
    service="starlette-fleet",
)
