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
stopped it, 2 for a refused target or a wrong option. Every option and the
configuration file are checked before the first request: a wrong one is refused
on one line that names it, its value and what is accepted, and nothing is sent.

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
from dataclasses import dataclass
from typing import Any, NoReturn

from perfnb.errors import ConfigError, PerfnbError
from perfnb.load.config import LoadConfig, load_config
from perfnb.load.engine import RUN_HEADER, Target, check_target
from perfnb.load.levels import LevelRecorder
from perfnb.load.presets import PRESETS, build_preset, check_preset, param_problem
from perfnb.load.runner import run_load
from perfnb.load.safety import Limits

__all__ = ["drop_run_data", "main_load", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# the run id goes into a header and a URL path as it is
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


def parse_duration(text: str) -> float:
    """Seconds in ``"60s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        msg = f"--duration {text!r}: accepted: a positive time such as 60s, 2m, 500ms or 1h"
        raise ConfigError(msg)
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line like every other refusal (main_load prints it), not usage text
        msg = f"{message} (perfnb load --help lists the options)"
        raise ConfigError(msg)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="perfnb load", description="Put a loopback app under load.")
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


def _app_seq(target: Target) -> tuple[str, int]:
    """The answering app process and its newest record number (its perfnb control
    endpoint): ``(boot, seq)``, ``("", 0)`` when unknown."""
    token = os.environ.get("PERFNB_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        f"{target.url}/api/performance-metrics/control", headers=headers
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5.0) as answer:
            doc = json.loads(answer.read())
            return str(doc.get("boot", "")), int(doc.get("seq", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return "", 0


@contextlib.contextmanager
def _app_records(target: Target, levels: LevelRecorder, *, follow: bool) -> Iterator[None]:
    """Feed the app's own records of the run to ``levels``, when the app has a perfnb feed."""
    if not follow:
        yield
        return
    from perfnb.eventstream import position_of
    from perfnb.feedclient import connect

    feed = connect(target.url, sink=levels, since="now", backoff=(0.25, 1.0))
    try:
        # an app without perfnb answers 404 and the connection gives up at once
        feed.wait_for(
            lambda c: c.connected or c.error is not None or c.connect_failures > 0, timeout=5.0
        )
        yield
        boot, last = _app_seq(target) if feed.connected else ("", 0)
        if last:
            # the feed batches for up to 50 ms: wait (bounded) until it has caught up
            feed.wait_for(lambda c: position_of(c.last_event_id, boot) >= last, timeout=10.0)
    finally:
        feed.close()


def _open_store(folder: str) -> Any:
    try:
        from perfnb.store import Store
    except ImportError as exc:  # pragma: no cover - the store lands in the same release
        msg = f"--store {folder!r}: the perfnb store is not available ({exc})"
        raise ConfigError(msg) from None
    try:
        return Store(folder)
    except OSError as exc:
        msg = f"--store {folder!r}: cannot open a store folder there ({exc.strerror or exc})"
        raise ConfigError(msg) from None


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


@dataclass(frozen=True, slots=True)
class _Plan:
    """The checked input of one ``perfnb load``."""

    target: Target
    preset: str
    overrides: dict[str, Any]
    limits: Limits
    run_id: str
    store: Any


def _plan(args: argparse.Namespace) -> _Plan:
    """Check every option and the configuration; nothing is sent to the target here."""
    target = check_target(args.target, allow_hosts=args.allow_host, allow_option="--allow-host")
    if args.workers is not None and args.workers < 0:
        msg = f"--workers {args.workers}: accepted: 0 (a thread in this process) or more processes"
        raise ConfigError(msg)
    if args.run_id is not None and not _RUN_ID.match(args.run_id):
        msg = (
            f"--run-id {args.run_id!r}: accepted: up to 100 letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit"
        )
        raise ConfigError(msg)
    if args.users is not None and args.rate is not None:
        msg = (
            f"--users {args.users} and --rate {args.rate}: accepted: one of them "
            "(--users runs the closed model, --rate the open one)"
        )
        raise ConfigError(msg)
    config: LoadConfig | None = load_config(args.config) if args.config else None
    preset = args.preset or (config.scenario if config else None)
    if preset is None:
        msg = f"give --preset (one of {', '.join(sorted(PRESETS))}) or --config FILE.json"
        raise ConfigError(msg)
    overrides: dict[str, Any] = dict(config.parameters) if config else {}
    for flag, name, value in (("--users", "users", args.users), ("--rate", "rate", args.rate)):
        if value is None:
            continue
        problem = param_problem(name, value)
        if problem is not None:
            msg = f"{flag} {value}: accepted: {problem}"
            raise ConfigError(msg)
        overrides[name] = value
    if args.users is not None:
        overrides.pop("rate", None)  # the flag asks for the closed model over the file's rate
    if args.duration is not None:
        overrides["duration"] = parse_duration(args.duration)
    check_preset(preset, overrides=overrides)
    return _Plan(
        target=target,
        preset=preset,
        overrides=overrides,
        limits=config.limits if config else Limits(),
        run_id=args.run_id or f"load-{uuid.uuid4().hex[:12]}",
        store=_open_store(args.store) if args.store else None,
    )


def main_load(argv: list[str]) -> int:
    """The ``perfnb load`` command; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        plan = _plan(args)
        target, run_id = plan.target, plan.run_id
        scenario, shape, _ = build_preset(
            plan.preset, target, run_id=run_id, overrides=plan.overrides
        )
        levels = LevelRecorder(run_id=run_id)
        with _app_records(target, levels, follow=not args.no_feed):
            result = run_load(
                target,
                scenario,
                shape,
                run_id=run_id,
                workers=args.workers,
                limits=plan.limits,
                store=plan.store,
                sink=levels,
                name=plan.preset,
            )
        result.bottleneck = levels.bottleneck(shape=shape)
    except PerfnbError as exc:
        text = " ".join(str(exc).splitlines())  # one line, whatever a message holds
        print(f"perfnb load: {text}", file=sys.stderr)
        return 2
    if not args.keep_run_data:
        drop_run_data(target, result.run_id)
    if args.json:
        print(json.dumps(result.to_json(), indent=None, default=str))
    else:
        print(result.table())
    return 0 if result.stop.reason == "completed" else 3
