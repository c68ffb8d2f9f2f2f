"""``perfnb demo``: the whole job, end to end, in well under a minute.

1. start the demo app on 127.0.0.1 (a child process, a free port, a throwaway
   database);
2. follow its perfnb feed into the store (``--store``, default ``data/``);
3. drive a few minutes of a small team's use, compressed (the scripted client
   of :mod:`perfnb.demo.traffic`), recording the client's view too — and, at the
   same time, put the app under a load-test preset (``--preset``, default
   High User Load) whose traffic is tagged with its run id and kept apart;
4. wait until the feed has delivered everything the app recorded, then stop
   the app (also on Ctrl-C or failure);
5. read this run back from the store and print the per-route summary of the
   real traffic (load excluded) and the load run's own summary.

>>> main_demo(["--store", "data", "--seconds", "120"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
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
from perfnb.eventstream import position_of
from perfnb.feedclient import connect
from perfnb.load.engine import check_target
from perfnb.load.presets import PRESETS, build_preset
from perfnb.load.result import RunResult
from perfnb.load.runner import run_load
from perfnb.schema import Record
from perfnb.store import Store

__all__ = ["main_demo", "run_demo"]

FEED = "/api/performance-metrics"


def run_demo(
    *,
    store: str | Path = "data",
    guests: int = 6,
    seconds: float = 180.0,
    speed: float = 10.0,
    seed: int | None = None,
    run_id: str | None = None,
    preset: str | None = "high_user_load",
    load_users: int = 10,
    load_seconds: float = 12.0,
    out: TextIO = sys.stdout,
) -> pd.DataFrame:
    """Run the demo job; print progress and the summary to ``out``; return the summary.

    ``seconds`` of simulated use by ``guests`` people run ``speed`` times faster
    than real time. ``run_id`` tags the traffic as a load run (kept in its own
    tenant and removed from the app afterwards; the records keep the tag).
    ``preset`` (a name of :data:`perfnb.load.presets.PRESETS`, or None) runs a
    load test of ``load_users`` users for ``load_seconds`` beside the real traffic.
    """
    if guests < 1 or seconds <= 0 or speed <= 0:
        raise ConfigError(
            f"guests={guests}, seconds={seconds}, speed={speed}: expected all greater than 0"
        )
    if run_id is not None:
        run_id_of(run_id, field="run_id")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} unknown; accepted: {', '.join(sorted(PRESETS))}")
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
        load_run_id = f"demo-load-{uuid.uuid4().hex[:8]}" if preset else None
        if preset and load_run_id:
            say(
                f"and a {preset!r} load run of {load_users} users for {load_seconds:g} s "
                f"(run id {load_run_id}, kept apart from the real traffic)..."
            )

        async def both() -> tuple[TrafficResult, RunResult | None]:
            real = drive(
                app.url,
                guests=guests,
                seconds=seconds,
                speed=speed,
                run_id=run_id,
                sink=client_records.append,
                seed=seed,
            )
            if not (preset and load_run_id):
                return await real, None
            load = asyncio.to_thread(
                _load, app.url, preset, load_run_id, users=load_users, seconds=load_seconds
            )
            return await asyncio.gather(real, load)

        result, load_result = asyncio.run(both())
        say(_traffic_line(result))
        with httpx.Client(base_url=app.url, timeout=10.0) as admin:
            state = admin.get(FEED + "/control").json()
            boot, last = str(state["boot"]), int(state["seq"])
            for tagged in (run_id, load_run_id):
                if tagged is not None:
                    admin.delete(f"/api/admin/runs/{tagged}").raise_for_status()
        if not feed.wait_for(lambda c: position_of(c.last_event_id, boot) >= last, timeout=20.0):
            say(f"warning: the feed delivered up to {feed.last_event_id!r} of {last} records")
        feed.close()
        stats = feed.stats()
        if stats["dropped"]:
            say(f"warning: the app's buffer dropped {stats['dropped']} records before the feed")
    if client_records:
        target.append(client_records)
    # The real picture: the scripted team's traffic (tagged only when --run-id asks).
    frame = target.read(start=started, include_load=True)
    own = frame["run_id"].astype("object")
    frame = frame[own.isna()] if run_id is None else frame[own == run_id]
    if frame.empty:
        raise PerfnbError(f"the store at {store} holds no records of this run")
    summary = summarise(frame)
    _report(frame, summary, store=store, say=say)
    if load_result is not None:
        say(f"\nload run {load_result.run_id} ({preset}), as its generator measured it:\n")
        say(load_result.table())
        seen = int((own == load_result.run_id).sum())
        say(f"\nthe app recorded {seen} records tagged with this run id (left out above)")
    return summary


def _load(url: str, preset: str, run_id: str, *, users: int, seconds: float) -> RunResult:
    target = check_target(url)
    scenario, shape, _ = build_preset(
        preset, target, run_id=run_id, overrides={"users": users, "duration": seconds}
    )
    return run_load(target, scenario, shape, run_id=run_id, workers=1, name=preset)


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
    parser.add_argument(
        "--preset",
        default="high_user_load",
        help="load-test preset run beside the real traffic, or 'none' "
        f"(one of: {', '.join(sorted(PRESETS))}; default high_user_load)",
    )
    parser.add_argument("--load-users", type=int, default=10, help="users of the load run")
    parser.add_argument(
        "--load-seconds", type=float, default=12.0, help="length of the load run (default 12)"
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
            preset=None if args.preset == "none" else args.preset,
            load_users=args.load_users,
            load_seconds=args.load_seconds,
        )
    except KeyboardInterrupt:
        print("\nperfnb demo: interrupted; the demo app was stopped", file=sys.stderr)
        return 130
    except (PerfnbError, httpx.HTTPError) as exc:
        print(f"perfnb demo: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - began:.0f} s", flush=True)
    return 0
