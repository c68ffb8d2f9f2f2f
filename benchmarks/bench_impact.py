"""What monitoring costs the demo app: the same load with perfnb's middleware off and on.

The demo app runs as a subprocess on a free loopback port; :func:`perfnb.load.impact.
measure_impact` switches its monitoring through the control endpoint in ABBA order and
reports on − off for p50/p95 latency per request and throughput, with a paired
t-interval over the rounds. One user (closed model, no think time), so each request's
latency is the app's with no queue in front of it. Two loads, one after the other in
the same run:

- ``health``: ``GET /api/health`` (no database; a few hundred µs), where the
  middleware's cost is the largest share of the request;
- ``api``: the API Stress preset (every endpoint, SQLite behind).

It also prints the middleware's own figure for its cost (Server-Timing ``perfnb``).

``PERFNB_BENCH_QUICK=1`` runs fewer and shorter rounds.
"""

from __future__ import annotations

import os
import statistics
import time

import httpx

from perfnb.collect.servertiming import parse_server_timing
from perfnb.demo.process import DemoAppProcess
from perfnb.load import Endpoint, Endpoints
from perfnb.load.impact import ImpactResult, measure_impact

#: The middleware's added cost the project aims for on a ~1 ms route (issue 3): ≤ 1 %.
TARGET_PCT = 1.0


def _row(name: str, r: ImpactResult) -> str:
    p50, p95, tput = r.p50, r.p95, r.throughput
    return (
        f"{name:<8} {p50.off:>8.0f} {p50.diff:>+8.1f} [{p50.low:+7.1f}, {p50.high:+7.1f}] "
        f"{p50.pct:>+6.2f}% [{p50.pct_low:+6.2f}, {p50.pct_high:+6.2f}]  "
        f"{p95.diff:>+8.1f} [{p95.low:+8.1f}, {p95.high:+8.1f}]  "
        f"{tput.pct:>+6.2f}%  {'yes' if r.toggled else 'NO'}"
    )


def _self_reported_us(url: str) -> float:
    """The middleware's own figure for its cost (Server-Timing ``perfnb;dur``), median of 20."""
    values = []
    with httpx.Client(base_url=url, trust_env=False) as client:
        for _ in range(20):
            header = client.get("/api/health").headers.get("server-timing", "")
            dur = {m.name: m.dur for m in parse_server_timing(header)}.get("perfnb")
            if dur:
                values.append(dur * 1000.0)
    return statistics.median(values) if values else float("nan")


def main() -> None:
    quick = os.environ.get("PERFNB_BENCH_QUICK") == "1"
    rounds, seconds = (6, 1.0) if quick else (16, 1.5)
    loads: list[tuple[str, str | Endpoints]] = [
        ("health", Endpoints([Endpoint("GET", "/api/health")])),
        ("api", "api_stress"),
    ]
    rows: list[tuple[str, ImpactResult]] = []
    with DemoAppProcess() as app:
        started = time.perf_counter()
        for name, what in loads:
            result = measure_impact(
                app.url, preset_or_scenario=what, rounds=rounds, seconds=seconds, users=1
            )
            rows.append((name, result))
        own_us = _self_reported_us(app.url)
        took = time.perf_counter() - started
    print(
        f"monitoring off vs on, {rounds} ABBA rounds × {seconds:g} s per state, 1 user "
        "(closed model), generator on a thread; paired t-interval (95%) over rounds; µs"
    )
    print(
        f"{'load':<8} {'p50 off':>8} {'p50 Δ':>8} {'95% CI':>18} {'p50 Δ%':>7} {'95% CI %':>17}  "
        f"{'p95 Δ':>8} {'95% CI':>20}  {'tput Δ%':>7}  toggled"
    )
    for name, r in rows:
        print(_row(name, r))
    for name, r in rows:
        met = r.p50.pct_high <= TARGET_PCT
        print(
            f"{name}: p50 overhead {r.p50.diff:+.1f} µs = {r.p50.pct:+.2f}% (95% CI "
            f"{r.p50.pct_low:+.2f} to {r.p50.pct_high:+.2f}); target ≤ {TARGET_PCT:g}% shown "
            f"by the CI: {'met' if met else 'not shown'}"
        )
    print(f"the middleware's own figure (Server-Timing perfnb;dur, median): {own_us:.1f} µs")
    print(f"({took:.0f} s of measuring; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
