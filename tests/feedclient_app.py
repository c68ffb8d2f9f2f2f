"""A small monitored Starlette app for the feed-client tests, run as a real process.

    python tests/feedclient_app.py PORT SPOOL [--token T] [--buffer N]

``GET /hello`` answers ``hello``. The app shuts down gracefully on SIGTERM and
writes its feed buffer to SPOOL, which the next start restores.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perfnb.server import Monitor, PerfnbMiddleware
from perfnb.server.monitor import FeedLimits


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("spool")
    parser.add_argument("--token", default=None)
    parser.add_argument("--buffer", type=int, default=10_000)
    args = parser.parse_args()
    monitor = Monitor(
        service="feedclient-test",
        token=args.token,
        buffer_size=args.buffer,
        spool=args.spool,
        limits=FeedLimits(keepalive_seconds=1.0, linger_seconds=0.01),
    )
    app = PerfnbMiddleware(Starlette(routes=[Route("/hello", hello)]), monitor=monitor)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="on",
        # open feed streams would otherwise hold a graceful shutdown for their full length
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
