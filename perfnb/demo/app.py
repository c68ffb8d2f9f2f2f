"""The demo app: the real application perfnb monitors out of the box.

A Starlette app with SQLite persistence, modelled on a collaborative product:
guests sign in, edit cards together, chat, show presence, and a plain-JS front
end keeps up through smart polling (2 s, backing off to 5 s when idle or hidden).
perfnb's middleware is installed, so its feed is at ``/api/performance-metrics``.
Fault switches under ``/api/admin/faults`` make it misbehave on purpose.

Serve it with ``perfnb demo-app --port 8000`` or, in Python:

>>> import uvicorn
>>> app = create_app(db_path="demo.sqlite3")       # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from perfnb.demo.api import FAULTY_ROUTES, SESSION_COOKIE, Api
from perfnb.demo.db import Database
from perfnb.demo.faults import Faults
from perfnb.demo.templates import SERVICE
from perfnb.server import Monitor, PerfnbMiddleware, timing
from perfnb.server.auth import Authoriser, is_loopback
from perfnb.server.beaconjs import BeaconScript

__all__ = ["SERVICE", "create_app", "main_demo_app"]

_STATIC: Final = Path(__file__).parent / "static"
#: Largest request body accepted (bulk imports); larger ones get 413.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024


def create_app(
    *,
    db_path: str | Path | None = None,
    monitor: Monitor | None = None,
    middleware: bool = True,
    service: str = SERVICE,
    admin_token: str | None = None,
    faults: Faults | None = None,
    beacon: bool = True,
) -> ASGIApp:
    """Build the demo app.

    ``db_path``: the SQLite file (created when missing); ``None`` uses a
    throwaway file removed at shutdown. ``monitor``: a ``perfnb.server.Monitor``
    to record into (the middleware makes one when ``None``). ``middleware=False``
    leaves perfnb out (for side-by-side comparisons). ``admin_token`` protects
    ``/api/admin/*`` exactly as the feed is protected: with no token (argument or
    ``PERFNB_TOKEN``), loopback clients only. ``faults``: switches to share with
    the caller (tests flip them directly). ``beacon``: serve perfnb's browser beacon
    at ``/_perfnb/beacon.js`` and inject it into the HTML page (with the middleware).

    Every database call is timed as the ``db`` span of ``Server-Timing``; the
    middleware keys clients by the session cookie, so per-client polling health
    sees each signed-in guest.

    >>> import pathlib, tempfile
    >>> app = create_app(db_path=pathlib.Path(tempfile.mkdtemp()) / "demo.sqlite3")
    >>> type(app).__name__, type(app.app).__name__
    ('BeaconScript', 'PerfnbMiddleware')
    """
    tmpdir: str | None = None
    if db_path is None:
        tmpdir = tempfile.mkdtemp(prefix="perfnb-demo-")
        db_path = Path(tmpdir) / "demo.sqlite3"
    switches = faults if faults is not None else Faults(known_routes=FAULTY_ROUTES)
    db = Database(db_path, slow_ms=switches.db_delay_ms, span=timing)
    api = Api(db=db, faults=switches, admin=Authoriser(token=admin_token))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            db.close()
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    async def index(request: Request) -> Response:
        return FileResponse(_STATIC / "index.html", media_type="text/html")

    async def script(request: Request) -> Response:
        return FileResponse(_STATIC / "app.js", media_type="text/javascript")

    routes = [Route("/", index, methods=["GET"]), Route("/static/app.js", script, methods=["GET"])]
    app = Starlette(
        routes=[*routes, *api.routes()], lifespan=lifespan, max_body_size=MAX_BODY_BYTES
    )
    app.state.db = db
    app.state.faults = switches
    if not middleware:
        return app
    if monitor is not None:
        monitored = PerfnbMiddleware(app, monitor=monitor, session_cookie=SESSION_COOKIE)
    else:
        monitored = PerfnbMiddleware(
            app, service=service, token=admin_token, session_cookie=SESSION_COOKIE
        )
    if not beacon:
        return monitored
    # Outside the middleware: the beacon wrapper reads batch headers before they are stripped.
    return BeaconScript(monitored, monitor=monitored.monitor)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb demo-app",
        description="Serve perfnb's demo app (monitored by perfnb) on this machine.",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--db", type=Path, default=None, help="SQLite file to keep (default: throwaway)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the app has fault switches: think twice)",
    )
    parser.add_argument("--token", default=None, help="token for the feed and admin endpoints")
    parser.add_argument("--no-monitor", action="store_true", help="serve without perfnb")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    # Used by `perfnb demo`: exit when the parent closes our stdin, so the app never
    # outlives the job that started it, even when that job is killed outright.
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    return parser


def main_demo_app(argv: Sequence[str]) -> int:
    """``perfnb demo-app --port P [--host 127.0.0.1] [--db PATH] [--allow-remote]``."""
    import uvicorn  # the server extra; imported only when serving

    args = _parser().parse_args(list(argv))
    if not (is_loopback(args.host) or args.host == "localhost") and not args.allow_remote:
        print(
            f"perfnb demo-app: --host {args.host!r} is not a loopback address; the demo app "
            "has fault switches and guest accounts, so it serves 127.0.0.1 / ::1 only "
            "unless you add --allow-remote",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.port <= 65535:
        print(f"perfnb demo-app: --port {args.port}: expected 1 to 65535", file=sys.stderr)
        return 2
    app = create_app(db_path=args.db, middleware=not args.no_monitor, admin_token=args.token)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False
    )
    server = uvicorn.Server(config)
    if args.exit_with_stdin:
        threading.Thread(target=_exit_on_eof, args=(server,), daemon=True).start()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{shown}:{args.port}"
    feed = "" if args.no_monitor else f"  feed: {base}/api/performance-metrics"
    print(f"perfnb demo app: {base}/{feed}  faults: {base}/api/admin/faults", flush=True)
    server.run()
    return 0


def _exit_on_eof(server: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    server.should_exit = True
