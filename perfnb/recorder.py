"""``perfnb record URL --store DIR``: follow an app's feed into a store until stopped.

>>> main_record(["--help"])  # doctest: +ELLIPSIS
usage: perfnb record ...
0
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType

from perfnb.errors import PerfnbError
from perfnb.feedclient import connect

__all__ = ["main_record"]

log = logging.getLogger("perfnb.recorder")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb record",
        description="Follow an app's perfnb feed and write its records to a store until "
        "SIGINT/SIGTERM; reconnects with Last-Event-ID and logs exact counts of what it missed.",
    )
    parser.add_argument("url", help="the app (http://127.0.0.1:8000) or its feed prefix")
    parser.add_argument("--store", required=True, help="store folder (created if missing)")
    parser.add_argument("--token", default=None, help="feed token (default: $PERFNB_TOKEN)")
    parser.add_argument(
        "--since",
        choices=("oldest", "now"),
        default="oldest",
        help="on the first connection, start from the oldest buffered record or from now",
    )
    parser.add_argument(
        "--progress",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="log the counts this often while they change (default 10)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return parser


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main_record(argv: Sequence[str]) -> int:
    """``perfnb record URL --store DIR [--token T]``: follow the feed into a store.

    Exits 0 after SIGINT/SIGTERM (with everything received flushed), 1 when the
    app refuses the feed (bad token, no perfnb under that prefix), 2 on bad
    arguments.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s perfnb record: %(message)s",
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            conn = connect(args.url, store=args.store, token=args.token, since=args.since)
        except PerfnbError as exc:
            log.error("%s", exc)
            return 2
        log.info("following %s into %s", conn.url, args.store)
        shown = (0, 0)
        next_report = time.monotonic() + args.progress
        while not stop.wait(min(0.5, max(args.progress, 0.05))):
            if not conn.running:
                break
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + args.progress
                now = (conn.received, conn.dropped)
                if now != shown:
                    shown = now
                    log.info("received %d records; %d missed so far", *now)
        conn.close()
    c = conn.stats()
    log.info(
        "stopped: %s records written to %s; %s missed (dropped by the app's buffer before "
        "they were read); %s invalid; %s reconnects; %s app restarts without a spool",
        c["received"],
        args.store,
        c["dropped"],
        c["invalid"],
        c["reconnects"],
        c["boot_changes"],
    )
    if conn.error is not None:
        return 1
    return 0
