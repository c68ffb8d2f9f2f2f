"""``perfnb load``: run a preset (or a configuration file) against a loopback target.

    perfnb load --target URL --preset NAME [--users N] [--rate R] [--duration 60s]
                [--config FILE.json] [--store DIR] [--json] [--workers N]
                [--allow-host HOST] [--keep-run-data]

Prints a summary table (per route: count, rate, p50/p95/p99 corrected and
uncorrected, errors, and the stop reason); ``--json`` prints the same as one JSON
object. Exit status: 0 when the run completed, 3 when a safety limit or an
interrupt stopped it, 2 for a refused target or a wrong option.

>>> parse_duration("90s"), parse_duration("2m"), parse_duration("1500ms")
(90.0, 120.0, 1.5)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
import uuid
from typing import Any

from perfnb.errors import ConfigError, PerfnbError
from perfnb.load.config import LoadConfig, load_config
from perfnb.load.engine import RUN_HEADER, Target, check_target
from perfnb.load.presets import PRESETS, build_preset
from perfnb.load.runner import run_load
from perfnb.load.safety import Limits

__all__ = ["main_load", "parse_duration"]

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
    return p


def _open_store(folder: str) -> Any:
    try:
        from perfnb.store import Store
    except ImportError as exc:  # pragma: no cover - the store lands in the same release
        msg = f"--store {folder!r}: the perfnb store is not available ({exc})"
        raise ConfigError(msg) from None
    return Store(folder)


def _drop_run_data(target: Target, run_id: str) -> None:
    # the demo app keeps a run's data in a tenant keyed by the run id; ask it to go.
    # Apps without the endpoint answer 404/401, which is fine.
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
        result = run_load(
            target,
            scenario,
            shape,
            run_id=run_id,
            workers=args.workers,
            limits=limits,
            store=store,
            name=preset,
        )
    except PerfnbError as exc:
        print(f"perfnb load: {exc}", file=sys.stderr)
        return 2
    if not args.keep_run_data:
        _drop_run_data(target, result.run_id)
    if args.json:
        print(json.dumps(result.to_json(), indent=None, default=str))
    else:
        print(result.table())
    return 0 if result.stop.reason == "completed" else 3
