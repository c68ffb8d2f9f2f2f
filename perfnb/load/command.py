"""``perfnb load``: run a preset (or a configuration file) against a loopback target.

    perfnb load --target URL --preset NAME [--users N] [--rate R] [--duration 60s]
                [--config FILE.json] [--store DIR] [--json] [--workers N]
                [--allow-host HOST] [--keep-run-data] [--no-feed]

Prints a summary table (per route: count, rate, p50/p95/p99 corrected and
uncorrected, errors, the stop reason, and the bottleneck: the first route to
degrade as the load grew and where its time went, see
:mod:`perfnb.load.bottleneck`); ``--json`` prints the same as one JSON object.
While the run goes, the command follows the app's perfnb feed when it has one
(``PERFNB_TOKEN`` if the app wants a token; ``--no-feed`` not to), so the time
split also covers rates above the engine's per-request record rate.
Exit status: 0 when the run completed, 3 when a safety limit or an interrupt
stopped it, 2 for a refused target or a wrong option.

>>> parse_duration("90s"), parse_duration("2m"), parse_duration("1500ms")
(90.0, 120.0, 1.5)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from perfnb.errors import ConfigError, PerfnbError
from perfnb.load.config import LoadConfig, load_config
from perfnb.load.engine import RUN_HEADER, Target, check_target
from perfnb.load.levels import LevelRecorder
from perfnb.load.presets import PRESETS, build_preset
from perfnb.load.runner import run_load
from perfnb.load.safety import Limits

__all__ = ["drop_run_data", "main_load", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"60s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        msg = f"--duration {text!r}: accepted: a positive time such as 60s, 2m, 500ms or 1h"
        raise ConfigError(msg)
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perfnb load", description="Put a loopback app under load.")
    p.add_argument("--target", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--preset", help=f"one of: {', '.join(sorted(PRESETS))}")
    p.add_argument("--users", type=int, help="concurrent users (closed model)")
    p.add_argument("--rate", type=float, help="requests or journeys per second (open model)")
    p.add_argument("--duration", help="run time: 60s, 2m, 500ms (default 60s)")
    p.add_argument("--config", help="a JSON configuration (the requirements document's form)")
    p.add_argument("--store", help="write the run's records to this perfnb store folder")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--allow-host", action="append", default=[], help="allow a non-loopback host")
    p.add_argument("--run-id", help="the run id (default: a fresh one)")
    p.add_argument(
        "--keep-run-data", action="store_true", help="do not ask the app to drop the run's tenant"
    )
    p.add_argument(
        "--no-feed", action="store_true", help="do not follow the app's perfnb feed during the run"
    )
    return p


def _app_seq(target: Target) -> int:
    """The app's newest record number (its perfnb control endpoint), 0 when unknown."""
    token = os.environ.get("PERFNB_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        f"{target.url}/api/performance-metrics/control", headers=headers
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5.0) as answer:
            return int(json.loads(answer.read()).get("seq", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _seq(last_event_id: str) -> int:
    try:
        return int(last_event_id.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


@contextlib.contextmanager
def _app_records(target: Target, levels: LevelRecorder, *, follow: bool) -> Iterator[None]:
    """Feed the app's own records of the run to ``levels``, when the app has a perfnb feed."""
    if not follow:
        yield
        return
    from perfnb.feedclient import connect

    feed = connect(target.url, sink=levels, since="now", backoff=(0.25, 1.0))
    try:
        # an app without perfnb answers 404 and the connection gives up at once
        feed.wait_for(
            lambda c: c.connected or c.error is not None or c.connect_failures > 0, timeout=5.0
        )
        yield
        last = _app_seq(target) if feed.connected else 0
        if last:
            # the feed batches for up to 50 ms: wait (bounded) until it has caught up
            feed.wait_for(lambda c: _seq(c.last_event_id) >= last, timeout=10.0)
    finally:
        feed.close()


def _open_store(folder: str) -> Any:
    try:
        from perfnb.store import Store
    except ImportError as exc:  # pragma: no cover - the store lands in the same release
        msg = f"--store {folder!r}: the perfnb store is not available ({exc})"
        raise ConfigError(msg) from None
    return Store(folder)


def drop_run_data(target: Target, run_id: str) -> None:
    """Ask the app to drop a run's data (the demo app keeps it in a tenant per run id).

    Apps without the endpoint answer 404 or 401, which is fine; never raises.
    """
    request = urllib.request.Request(
        f"{target.url}/api/admin/runs/{run_id}", method="DELETE", headers={RUN_HEADER: run_id}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5.0):
            pass
    except OSError:
        pass


def main_load(argv: list[str]) -> int:
    """The ``perfnb load`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        target = check_target(args.target, allow_hosts=args.allow_host)
        config: LoadConfig | None = load_config(args.config) if args.config else None
        preset = args.preset or (config.scenario if config else None)
        if preset is None:
            msg = f"give --preset (one of {', '.join(sorted(PRESETS))}) or --config FILE.json"
            raise ConfigError(msg)
        overrides: dict[str, Any] = dict(config.parameters) if config else {}
        if args.users is not None:
            if args.users < 1:
                msg = f"--users {args.users}: accepted: at least 1"
                raise ConfigError(msg)
            overrides["users"] = args.users
        if args.rate is not None:
            if not args.rate > 0:
                msg = f"--rate {args.rate}: accepted: a positive number per second"
                raise ConfigError(msg)
            overrides["rate"] = args.rate
        if args.duration is not None:
            overrides["duration"] = parse_duration(args.duration)
        run_id = args.run_id or f"load-{uuid.uuid4().hex[:12]}"
        limits = config.limits if config else Limits()
        scenario, shape, _ = build_preset(preset, target, run_id=run_id, overrides=overrides)
        store = _open_store(args.store) if args.store else None
        levels = LevelRecorder(run_id=run_id)
        with _app_records(target, levels, follow=not args.no_feed):
            result = run_load(
                target,
                scenario,
                shape,
                run_id=run_id,
                workers=args.workers,
                limits=limits,
                store=store,
                sink=levels,
                name=preset,
            )
        result.bottleneck = levels.bottleneck(shape=shape)
    except PerfnbError as exc:
        print(f"perfnb load: {exc}", file=sys.stderr)
        return 2
    if not args.keep_run_data:
        drop_run_data(target, result.run_id)
    if args.json:
        print(json.dumps(result.to_json(), indent=None, default=str))
    else:
        print(result.table())
    return 0 if result.stop.reason == "completed" else 3
