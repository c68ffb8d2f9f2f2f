"""The cost of watching: the same load with the app's monitoring off and on, compared.

:func:`measure_impact` turns the app's monitoring off and on through its control
endpoint (``POST <prefix>/control {"enabled": ...}``) and runs the same load in
each state, ``rounds`` times. The phases are interleaved in ABBA order (off, on,
on, off, off, on, …), so a slow drift of the machine (another process, thermal,
caches filling) falls on both states alike. Each round gives one paired
difference (on − off) in p50 and p95 latency per request (µs and %) and in
throughput; the answer is the mean difference with a **paired t-interval** over
the rounds (a t distribution with rounds − 1 degrees of freedom; the rounds are
the independent units, the requests within a phase are not).

Every phase has its own run id (``<run_id>-r<k>-on`` / ``-off``), so the app's
records say which phase made them; each phase also reports how many records the
app's monitor took meanwhile (from the control endpoint's ``seq``), and the
result says whether off really meant off. The app's original control state
(enabled, kinds, sample) is put back at the end, also after an error or Ctrl-C.
Load goes only where the engine's allow-list lets it (loopback by default), and
every phase is bounded by ``seconds``. Afterwards the app is asked to drop each
phase's data (the demo app keeps a run's data in a tenant of its own).

>>> r = measure_impact("http://127.0.0.1:8000", preset_or_scenario="api_stress",
...                    rounds=10, seconds=2)                              # doctest: +SKIP
>>> print(r.table())                                                      # doctest: +SKIP

``perfnb impact --target URL (--preset NAME | --path /p ...)`` is the command
(:func:`main_impact`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from perfnb.errors import ConfigError, PerfnbError, TargetError
from perfnb.load.command import drop_run_data
from perfnb.load.engine import Target, check_target
from perfnb.load.paired import Difference, paired_difference
from perfnb.load.presets import PRESETS, build_preset
from perfnb.load.result import RunResult
from perfnb.load.runner import LoadRun
from perfnb.load.scenarios import Endpoint, Endpoints, Journey
from perfnb.load.shapes import ConstantRate, Shape, Users

__all__ = ["ImpactResult", "Phase", "main_impact", "measure_impact"]

DEFAULT_PREFIX: Final = "/api/performance-metrics"
#: An "off" phase may still see a few records (perfnb's own control calls racing
#: the switch); more than this share of its requests means monitoring was not off.
_OFF_ALLOWANCE: Final = 0.02


@dataclass(frozen=True, slots=True)
class Phase:
    """One run of the load in one monitoring state."""

    round: int
    monitoring: bool
    run_id: str
    requests: int
    errors: int
    throughput: float  # requests per second
    p50_us: float
    p95_us: float
    records: int  # records the app's monitor took during the phase
    reliable: bool


@dataclass(frozen=True, slots=True)
class ImpactResult:
    """What :func:`measure_impact` found."""

    target: str
    scenario: str
    rounds: int
    seconds: float
    confidence: float
    method: str
    p50: Difference
    p95: Difference
    throughput: Difference
    phases: list[Phase]
    toggled: bool
    restored: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (what ``perfnb impact --json`` prints)."""
        return {
            "target": self.target,
            "scenario": self.scenario,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "confidence": self.confidence,
            "method": self.method,
            "p50": self.p50.to_json(),
            "p95": self.p95.to_json(),
            "throughput": self.throughput.to_json(),
            "toggled": self.toggled,
            "restored": self.restored,
            "phases": [{k: getattr(p, k) for k in p.__dataclass_fields__} for p in self.phases],
        }

    def table(self) -> str:
        """A plain-text summary."""
        level = f"{self.confidence:.0%}"
        lines = [
            f"monitoring impact on {self.target} ({self.scenario}; {self.rounds} rounds × "
            f"{self.seconds:g} s per state, ABBA order; {self.method})",
            f"{'figure':<12} {'off':>11} {'on':>11} {'on−off':>11} {level + ' CI':>24} "
            f"{'%':>7} {level + ' CI %':>18}",
        ]
        for d in (self.p50, self.p95, self.throughput):
            lines.append(
                f"{d.name:<12} {d.off:>11.1f} {d.on:>11.1f} {d.diff:>+11.1f} "
                f"{f'[{d.low:+.1f}, {d.high:+.1f}] {d.unit}':>24} {d.pct:>+6.2f}% "
                f"{f'[{d.pct_low:+.2f}, {d.pct_high:+.2f}]':>18}"
            )
        on = [p.records for p in self.phases if p.monitoring]
        off = [p.records for p in self.phases if not p.monitoring]
        verdict = "toggled as asked" if self.toggled else "NOT TOGGLED: the figures compare nothing"
        lines.append(
            f"records taken by the app: on phases {min(on, default=0)}–{max(on, default=0)}, "
            f"off phases {min(off, default=0)}–{max(off, default=0)} ({verdict})"
        )
        if not all(p.reliable for p in self.phases):
            lines.append("some phases were marked unreliable by the load engine")
        return "\n".join(lines)


# -- the control endpoint ---------------------------------------------------------------
class _Control:
    def __init__(self, target: Target, prefix: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = f"{target.url}{prefix.rstrip('/')}/control"
        self.client = httpx.Client(headers=headers, timeout=10.0, trust_env=False)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            msg = (
                f"control endpoint {self.url}: HTTP {response.status_code} {response.text[:200]!r}"
                " (a token is needed unless the app sees a loopback client; give token=)"
            )
            raise TargetError(msg)
        doc: dict[str, Any] = response.json()
        return doc

    def state(self) -> dict[str, Any]:
        try:
            return self._answer(self.client.get(self.url))
        except httpx.HTTPError as exc:
            msg = f"control endpoint {self.url}: {exc}"
            raise TargetError(msg) from None

    def set(self, changes: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._answer(self.client.post(self.url, json=changes))
        except httpx.HTTPError as exc:
            msg = f"control endpoint {self.url}: {exc}"
            raise TargetError(msg) from None

    def close(self) -> None:
        self.client.close()


# -- the measurement --------------------------------------------------------------------
def _abba(rounds: int) -> list[tuple[int, bool]]:
    """(round, monitoring on?) in ABBA order: off on, on off, off on, …"""
    out: list[tuple[int, bool]] = []
    for k in range(rounds):
        first = k % 2 == 1  # odd rounds start with "on"
        out += [(k, first), (k, not first)]
    return out


def _check(name: str, value: float, ok: bool, accepted: str) -> None:
    if not ok:
        msg = f"{name}={value!r}: accepted: {accepted}"
        raise ConfigError(msg)


def measure_impact(
    target_url: str | Target,
    *,
    preset_or_scenario: str | Endpoints | Journey,
    rounds: int = 10,
    seconds: float = 2.0,
    token: str | None = None,
    users: int | None = None,
    rate: float | None = None,
    warmup: float = 2.0,
    confidence: float = 0.95,
    workers: int | None = 0,
    prefix: str = DEFAULT_PREFIX,
    allow_hosts: Iterable[str] = (),
    run_id: str | None = None,
) -> ImpactResult:
    """Run the same load with the app's monitoring off and on; report the difference.

    ``preset_or_scenario`` is a preset name (built afresh for every phase, so each
    phase's set-up lives in its own tenant; its own users unless ``users`` is
    given) or a scenario. The load is ``users`` users in the closed model (default
    1, no think time: each request's latency is the app's, with no queue in
    front), or ``rate`` requests per second in the open model. ``warmup`` seconds
    of load (monitoring on, not counted) go first. ``workers=0`` (the default)
    runs the generator on a thread here: no process start per phase, so rounds
    can be short and many, which pairs the two states closely in time.

    Raises :class:`~perfnb.errors.TargetError` when the control endpoint cannot be
    reached or refuses the token.
    """
    target = (
        target_url
        if isinstance(target_url, Target)
        else check_target(target_url, allow_hosts=allow_hosts)
    )
    _check("rounds", rounds, isinstance(rounds, int) and 2 <= rounds <= 100, "2 to 100 rounds")
    _check("seconds", seconds, 0.5 <= seconds <= 600, "0.5 to 600 seconds per phase")
    _check("warmup", warmup, 0 <= warmup <= 600, "0 to 600 seconds")
    _check("confidence", confidence, 0.5 <= confidence < 1, "a level in [0.5, 1), e.g. 0.95")
    if users is not None and rate is not None:
        msg = f"users={users!r} and rate={rate!r}: accepted: one of them (closed or open model)"
        raise ConfigError(msg)
    if isinstance(preset_or_scenario, str) and preset_or_scenario not in PRESETS:
        msg = (
            f"preset_or_scenario={preset_or_scenario!r}: accepted: one of "
            f"{', '.join(sorted(PRESETS))}, or an Endpoints or Journey scenario"
        )
        raise ConfigError(msg)
    base = run_id or f"impact-{uuid.uuid4().hex[:8]}"
    control = _Control(target, prefix, token)
    original = control.state()
    phases: list[Phase] = []
    try:
        if warmup > 0:
            control.set({"enabled": True})
            _run(target, preset_or_scenario, f"{base}-warmup", warmup, users, rate, workers)
        for k, on in _abba(rounds):
            phase_id = f"{base}-r{k + 1}-{'on' if on else 'off'}"
            control.set({"enabled": on})
            before = int(control.state()["seq"])
            result = _run(target, preset_or_scenario, phase_id, seconds, users, rate, workers)
            after = int(control.state()["seq"])
            phases.append(_phase(k + 1, on, phase_id, result, after - before))
    except BaseException:
        # put the app back as it was, then let the first error (or Ctrl-C) go on: it
        # says more than a failure to restore would
        with contextlib.suppress(PerfnbError):
            _restore(control, original)
        control.close()
        raise
    try:
        restored = _restore(control, original)
    finally:
        control.close()
        for phase_id in [f"{base}-warmup", *(p.run_id for p in phases)]:
            drop_run_data(target, phase_id)
    return _summarise(target, preset_or_scenario, rounds, seconds, confidence, phases, restored)


def _restore(control: _Control, original: dict[str, Any]) -> dict[str, Any]:
    wanted = {k: original.get(k) for k in ("enabled", "kinds", "sample")}
    state = control.set(wanted)
    return {k: state.get(k) for k in wanted}


def _run(
    target: Target,
    what: str | Endpoints | Journey,
    phase_id: str,
    seconds: float,
    users: int | None,
    rate: float | None,
    workers: int | None,
) -> RunResult:
    shape: Shape
    if isinstance(what, str):
        overrides: dict[str, Any] = {"duration": seconds, "think_time": 0.0}
        if rate is not None:
            overrides["rate"] = rate
        if users is not None:
            overrides["users"] = users
        scenario, shape, _ = build_preset(what, target, run_id=phase_id, overrides=overrides)
    else:
        scenario = what
        shape = (
            ConstantRate(rate, duration=seconds)
            if rate is not None
            else Users(users or 1, duration=seconds)
        )
    run = LoadRun(target, scenario, shape, run_id=phase_id, workers=workers, probe_memory=False)
    run.start()
    try:
        return run.wait()
    except BaseException:
        # Ctrl-C (or any failure) between phases: stop the load before anything else
        run.stop("interrupt", "the impact measurement was interrupted")
        run.wait(timeout=10.0)
        raise


def _phase(k: int, on: bool, phase_id: str, result: RunResult, records: int) -> Phase:
    p50, p95 = result.latency.percentiles((50, 95))
    return Phase(
        round=k,
        monitoring=on,
        run_id=phase_id,
        requests=result.total.count,
        errors=result.total.errors,
        throughput=result.total.rate,
        p50_us=p50 * 1000.0,
        p95_us=p95 * 1000.0,
        records=records,
        reliable=result.reliable,
    )


def _summarise(
    target: Target,
    what: str | Endpoints | Journey,
    rounds: int,
    seconds: float,
    confidence: float,
    phases: list[Phase],
    restored: dict[str, Any],
) -> ImpactResult:
    by_round: dict[int, dict[bool, Phase]] = {}
    for p in phases:
        by_round.setdefault(p.round, {})[p.monitoring] = p
    pairs = [(r[False], r[True]) for r in by_round.values() if len(r) == 2]
    if len(pairs) < 2:
        msg = f"only {len(pairs)} complete round(s); the comparison needs at least 2"
        raise PerfnbError(msg)
    toggled = all(p.records > 0 for _, p in pairs) and all(
        p.records <= _OFF_ALLOWANCE * p.requests + 5 for p, _ in pairs
    )
    name = what if isinstance(what, str) else type(what).__name__
    return ImpactResult(
        target=target.url,
        scenario=name,
        rounds=len(pairs),
        seconds=seconds,
        confidence=confidence,
        method=f"paired t-interval over rounds ({len(pairs) - 1} df)",
        p50=paired_difference("p50", "µs", [(a.p50_us, b.p50_us) for a, b in pairs], confidence),
        p95=paired_difference("p95", "µs", [(a.p95_us, b.p95_us) for a, b in pairs], confidence),
        throughput=paired_difference(
            "throughput", "req/s", [(a.throughput, b.throughput) for a, b in pairs], confidence
        ),
        phases=phases,
        toggled=toggled,
        restored=restored,
    )


# -- the command ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perfnb impact",
        description="Measure what monitoring costs an app: the same load with monitoring off/on.",
    )
    p.add_argument("--target", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--preset", help=f"one of: {', '.join(sorted(PRESETS))}")
    p.add_argument("--path", action="append", default=[], help="GET this path (repeatable)")
    p.add_argument("--rounds", type=int, default=10, help="off/on pairs (default 10)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per phase (default 2)")
    p.add_argument("--users", type=int, help="closed model: users (default 1)")
    p.add_argument("--rate", type=float, help="open model: requests per second")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (default 2)")
    p.add_argument("--token", help="the app's perfnb token (or PERFNB_TOKEN)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="the app's perfnb prefix")
    p.add_argument(
        "--workers", type=int, default=0, help="load worker processes (default 0: a thread)"
    )
    p.add_argument("--allow-host", action="append", default=[], help="allow a non-loopback host")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main_impact(argv: list[str]) -> int:
    """``perfnb impact``: returns 0, or 2 for a wrong option or an unreachable target.

    >>> main_impact(["--target", "http://192.0.2.1:8000", "--path", "/"])  # not loopback
    2
    """
    import os

    args = _parser().parse_args(argv)
    try:
        what: str | Endpoints
        if args.preset and args.path:
            msg = "give --preset or --path, not both"
            raise ConfigError(msg)
        target = check_target(args.target, allow_hosts=args.allow_host, allow_option="--allow-host")
        if args.preset:
            what = args.preset
        elif args.path:
            what = Endpoints([Endpoint("GET", path) for path in args.path])
        else:
            msg = f"give --preset (one of {', '.join(sorted(PRESETS))}) or --path /some/path"
            raise ConfigError(msg)
        result = measure_impact(
            target,
            preset_or_scenario=what,
            rounds=args.rounds,
            seconds=args.seconds,
            token=args.token or os.environ.get("PERFNB_TOKEN"),
            users=args.users,
            rate=args.rate,
            warmup=args.warmup,
            workers=args.workers,
            prefix=args.prefix,
            allow_hosts=args.allow_host,
        )
    except PerfnbError as exc:
        print(f"perfnb impact: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json()) if args.json else result.table())
    return 0
