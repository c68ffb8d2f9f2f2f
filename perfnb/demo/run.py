"""``perfnb demo``: the whole job, end to end, in well under a minute.

1. start the demo app on 127.0.0.1 (a child process, a free port, a throwaway
   database);
2. follow its perfnb feed into the store (``--store``, default ``data/``);
3. drive a few minutes of a small team's use, compressed (the scripted client
   of :mod:`perfnb.demo.traffic`), recording the client's view too;
4. wait until the feed has delivered everything the app recorded, then stop
   the app (also on Ctrl-C or failure);
5. read this run back from the store and print the per-route summary.

>>> main_demo(["--store", "data", "--seconds", "120"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx
import pandas as pd

from perfnb.demo.api import run_id_of
from perfnb.demo.process import DemoAppProcess
from perfnb.demo.summary import format_summary, summarise
from perfnb.demo.traffic import TrafficResult, drive
from perfnb.errors import ConfigError, PerfnbError
from perfnb.feedclient import connect
from perfnb.schema import Record
from perfnb.store import Store

__all__ = ["main_demo", "run_demo"]

FEED = "/api/performance-metrics"


def _feed_seq(event_id: str) -> int:
    _, _, seq = event_id.rpartition(":")
    return int(seq) if seq.isdigit() else 0


def run_demo(
    *,
    store: str | Path = "data",
    guests: int = 6,
    seconds: float = 180.0,
    speed: float = 10.0,
    seed: int | None = None,
    run_id: str | None = None,
    out: TextIO = sys.stdout,
) -> pd.DataFrame:
    """Run the demo job; print progress and the summary to ``out``; return the summary.

    ``seconds`` of simulated use by ``guests`` people run ``speed`` times faster
    than real time. ``run_id`` tags the traffic as a load run (kept in its own
    tenant and removed from the app afterwards; the records keep the tag).
    """
    if guests < 1 or seconds <= 0 or speed <= 0:
        raise ConfigError(
            f"guests={guests}, seconds={seconds}, speed={speed}: expected all greater than 0"
        )
    if run_id is not None:
        run_id_of(run_id, field="run_id")
    started = datetime.now(UTC)
    target = Store(store)
    client_records: list[Record] = []

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="perfnb-demo-")))
        app = stack.enter_context(DemoAppProcess(db=home / "demo.sqlite3"))
        say(f"demo app: {app.url}/  (pid {app.pid}; feed {app.url}{FEED})")
        feed = stack.enter_context(connect(app.url + FEED, store=target))
        say(
            f"driving {guests} guests through {seconds:g} s of use at {speed:g}x "
            f"(~{seconds / speed:.0f} s)..."
        )
        result = asyncio.run(
            drive(
                app.url,
                guests=guests,
                seconds=seconds,
                speed=speed,
                run_id=run_id,
                sink=client_records.append,
                seed=seed,
            )
        )
        say(_traffic_line(result))
        with httpx.Client(base_url=app.url, timeout=10.0) as admin:
            last = int(admin.get(FEED + "/control").json()["seq"])
            if run_id is not None:
                admin.delete(f"/api/admin/runs/{run_id}").raise_for_status()
        if not feed.wait_for(lambda c: _feed_seq(c.last_event_id) >= last, timeout=20.0):
            say(f"warning: the feed delivered up to {feed.last_event_id!r} of {last} records")
        feed.close()
        stats = feed.stats()
        if stats["dropped"]:
            say(f"warning: the app's buffer dropped {stats['dropped']} records before the feed")
    if client_records:
        target.append(client_records)
    frame = target.read(start=started, include_load=True)
    if frame.empty:
        raise PerfnbError(f"the store at {store} holds no records of this run")
    summary = summarise(frame)
    _report(frame, summary, store=store, say=say)
    return summary


def _traffic_line(result: TrafficResult) -> str:
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(result.statuses.items()))
    failed = sum(result.failures.values())
    extra = f", {failed} without an answer" if failed else ""
    return f"sent {result.requests} requests in {result.seconds:.1f} s ({statuses}{extra})"


def _report(
    frame: pd.DataFrame, summary: pd.DataFrame, *, store: str | Path, say: Callable[[str], None]
) -> None:
    sources = frame["source"].astype("object").value_counts()
    counts = ", ".join(f"{n} {s}" for s, n in sources.items())
    say(f"\nstore {store}: {len(frame)} records of this run ({counts})")
    kinds = frame["kind"].astype("object")
    if "name" in frame.columns and "value" in frame.columns:
        rss = frame[(kinds == "process") & (frame["name"].astype("object") == "rss_bytes")]
    else:
        rss = frame.iloc[0:0]
    if not rss.empty:
        say(f"app memory: RSS peak {rss['value'].max() / 2**20:.0f} MB")
    if ((frame["source"].astype("object") == "client") & (kinds == "http")).any():
        seen = "latency as the client saw it; server and network p50 split it"
    else:
        seen = "latency as the app saw it: no client records"
    say(f"\nper route ({seen}):\n")
    say(format_summary(summary))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfnb demo",
        description=(
            "Start the demo app, record it through its feed into a store, drive a few "
            "minutes of use compressed into seconds, and print a per-route summary."
        ),
    )
    parser.add_argument("--store", default="data", help="store folder (default: data)")
    parser.add_argument("--guests", type=int, default=6, help="simulated people (default 6)")
    parser.add_argument(
        "--seconds", type=float, default=180.0, help="simulated seconds of use (default 180)"
    )
    parser.add_argument(
        "--speed", type=float, default=10.0, help="how much faster than real time (default 10)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed the script (repeatable)")
    parser.add_argument(
        "--run-id", default=None, help="tag the traffic as this load run (kept apart)"
    )
    return parser


def main_demo(argv: Sequence[str]) -> int:
    """``perfnb demo [--store DIR] [--guests N] [--seconds S] [--speed X] [--run-id ID]``."""
    args = _parser().parse_args(list(argv))
    began = time.monotonic()
    try:
        run_demo(
            store=args.store,
            guests=args.guests,
            seconds=args.seconds,
            speed=args.speed,
            seed=args.seed,
            run_id=args.run_id,
        )
    except KeyboardInterrupt:
        print("\nperfnb demo: interrupted; the demo app was stopped", file=sys.stderr)
        return 130
    except (PerfnbError, httpx.HTTPError) as exc:
        print(f"perfnb demo: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - began:.0f} s", flush=True)
    return 0
