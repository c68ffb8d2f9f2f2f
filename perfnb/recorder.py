"""``perfnb record URL [URL ...] --store DIR``: follow apps' feeds into a store until stopped.

Every feed is followed at once, each on its own thread with its own backoff
(0.5 s doubling up to ``--max-backoff``, 30 s by default); a host that goes away
and comes back is logged both times, and what it lost meanwhile is counted. The
store keeps each feed's resume point with its records, so a recorder killed at
any moment (SIGKILL included) and started again resumes exactly where the store
ends: nothing twice, and whatever the apps could no longer give back counted
per feed and per app instance. ``0 missed`` is logged only when it is true.

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

from perfnb.errors import ConfigError, PerfnbError
from perfnb.feedclient import FeedConnection, check_options, connect
from perfnb.feedcounts import describe_instances, missed
from perfnb.feedgroup import FeedGroup
from perfnb.feedtargets import read_targets

__all__ = ["main_record"]

log = logging.getLogger("perfnb.recorder")

#: The first wait before trying a feed again; it doubles up to --max-backoff.
FIRST_BACKOFF = 0.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb record",
        description="Follow apps' perfnb feeds and write their records to one store until "
        "SIGINT/SIGTERM. The store keeps each feed's resume point with its records: a "
        "restart (even after SIGKILL) resumes exactly, and logs exact counts of what it missed.",
    )
    parser.add_argument(
        "url", nargs="*", help="an app (http://127.0.0.1:8000) or its feed prefix; several allowed"
    )
    parser.add_argument(
        "--targets", metavar="FILE", help="more URLs, one a line ('#' starts a comment)"
    )
    parser.add_argument("--store", required=True, help="store folder (created if missing)")
    parser.add_argument("--token", default=None, help="feed token (default: $PERFNB_TOKEN)")
    parser.add_argument(
        "--since",
        choices=("oldest", "now"),
        default="oldest",
        help="for a feed the store has no resume point of: start from the oldest buffered "
        "record or from now (a stored resume point always wins)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help=f"longest wait between attempts to reach a feed (from {FIRST_BACKOFF} s, doubling)",
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


def _feed_lines(group: FeedGroup, *, always: bool) -> list[str]:
    """One line per feed and per instance, when there is more than one or anything missed."""
    many = len(group.feeds) > 1
    lines: list[str] = []
    for conn in group.feeds.values():
        instances = conn.instances()
        if not (always or many or len(instances) > 1 or conn.dropped or conn.boot_changes):
            continue
        lines.append(f"  {conn.key}: {conn.received} records, {conn.missed()}")
        lines += [f"    {text}" for text in describe_instances(instances)]
    return lines


def _starting(conn: FeedConnection, store: str, since: str) -> str:
    totals = conn.totals
    if conn.resumed_from is None:
        start = "from the oldest buffered record" if since == "oldest" else "from now on"
        return f"following {conn.key} into {store}, {start}"
    return (
        f"following {conn.key} into {store}, resuming after the point stored with its records "
        f"(the store holds {totals.received} records of it; "
        f"{missed(totals.dropped, totals.boot_changes)} before)"
    )


def main_record(argv: Sequence[str]) -> int:
    """``perfnb record URL [URL ...] --store DIR``: follow the feeds into a store.

    Exits 0 after SIGINT/SIGTERM (with everything received flushed), 1 when an
    app refuses its feed (bad token, no perfnb under that prefix) or the store
    cannot be used, 2 on bad arguments.
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
    # httpx logs every request at INFO: one line per stream, which says nothing new.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    backoff = (FIRST_BACKOFF, max(FIRST_BACKOFF, args.max_backoff))
    try:
        urls = list(args.url) + (read_targets(args.targets) if args.targets else [])
        if not urls:
            parser.print_usage()
            log.error("give at least one URL, or --targets FILE")
            return 2
        check_options(args.since, backoff)
    except PerfnbError as exc:
        log.error("%s", exc)
        return 2
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            from perfnb.store import Store

            store = Store(args.store)
            if store.recovered:
                log.warning(
                    "the store's append log held %d records taken in before a crash; "
                    "they are written now",
                    store.recovered,
                )
            group = connect(urls, store=store, token=args.token, since=args.since, backoff=backoff)
        except ConfigError as exc:  # a URL that is not one, or one feed given twice
            log.error("%s", exc)
            return 2
        except PerfnbError as exc:
            log.error("%s", exc)
            return 1
        for conn in group.feeds.values():
            log.info("%s", _starting(conn, args.store, args.since))
        _follow(group, stop, args.progress)
        group.close()
    _report(group, args.store)
    return 1 if group.errors else 0


def _follow(group: FeedGroup, stop: threading.Event, every: float) -> None:
    shown = (0, 0, 0)
    next_report = time.monotonic() + every
    while not stop.wait(min(0.5, max(every, 0.05))):
        if not group.running:
            break
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + every
            now = (group.received, group.dropped, group.boot_changes)
            if now != shown:
                shown = now
                log.info(
                    "%s",
                    "\n".join(
                        [
                            f"received {group.received} records; {group.missed()} so far",
                            *_feed_lines(group, always=False),
                        ]
                    ),
                )


def _report(group: FeedGroup, store: str) -> None:
    c = group.stats()
    lines = [
        f"stopped: {c['received']} records written to {store}; {group.missed()} (dropped by "
        f"the apps' buffers before they were read); {c['invalid']} invalid; {c['reconnects']} "
        f"reconnects; {c['boot_changes']} app restarts without a spool",
        *_feed_lines(group, always=len(group.feeds) > 1),
    ]
    for conn in group.feeds.values():
        t = conn.totals
        lines.append(
            f"  {conn.key}: the store now holds {t.received} records of this feed "
            f"({missed(t.dropped, t.boot_changes)}, {t.invalid} invalid, over every run)"
        )
    for key, error in group.errors.items():
        lines.append(f"  {key}: stopped: {error}")
    log.info("%s", "\n".join(lines))
