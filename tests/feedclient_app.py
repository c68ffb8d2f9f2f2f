"""A small monitored Starlette app for the feed-client tests, run as a real process.

    python tests/feedclient_app.py PORT SPOOL [--token T] [--buffer N] [--service S]
                                              [--journal FILE]

``GET /hello`` answers ``hello``. With ``--journal``, every record the monitor
takes is appended to FILE as one JSON line, in the order it numbered them:
``[epoch µs, source, kind, name, route, run_id, tags]``, tags as ``k=v,...`` (the
tests compare it with what a recorder stored; the file carries on over restarts).
The app shuts down gracefully on SIGTERM and writes its feed buffer to SPOOL,
which the next start restores.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perfnb.schema import Record, epoch_us
from perfnb.server import Monitor, PerfnbMiddleware
from perfnb.server.monitor import FeedLimits


def identity(rec: Record) -> list[Any]:
    """What tells one record from another, in JSON."""
    return [
        epoch_us(rec["time"]),
        rec["source"],
        rec["kind"],
        rec.get("name"),
        rec.get("route"),
        rec.get("run_id"),
        ",".join(f"{k}={v}" for k, v in sorted((rec.get("tags") or {}).items())),
    ]


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("spool")
    parser.add_argument("--token", default=None)
    parser.add_argument("--buffer", type=int, default=10_000)
    parser.add_argument("--service", default="feedclient-test")
    parser.add_argument("--journal", default=None)
    args = parser.parse_args()
    sink = None
    if args.journal:
        journal = open(args.journal, "a", buffering=1)  # noqa: SIM115 - open while the app runs

        def sink(rec: Record) -> None:
            journal.write(json.dumps(identity(rec)) + "\n")

    monitor = Monitor(
        service=args.service,
        token=args.token,
        buffer_size=args.buffer,
        spool=args.spool,
        sink=sink,
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
