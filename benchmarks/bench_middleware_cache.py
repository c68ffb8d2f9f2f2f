"""Middleware benchmark under cachegrind: instructions and cache misses added per request.

Times on a shared machine are noisy; valgrind's cachegrind counts the
instructions a process executes and the misses of a simulated cache, which come
out the same from one run to the next whatever else the machine does. This is
the measure to use when changing the middleware's hot path.

It also shows where a middleware's cost comes from. The request path of a
Starlette app already overflows the 32 KB first-level instruction cache (the
bare app misses it well over a thousand times per request), so every distinct
line of code a middleware adds is fetched again on every request: its I1 misses
weigh as much as its instructions. After a handler that also pushes that code out
of the second-level cache (a real 1 ms handler does), each of those misses costs
several times more, which is why ``bench_middleware`` finds perfnb costing 2-3×
more after its 1 ms route than after its trivial one.

Each contender serves the trivial route of ``bench_middleware``'s app (the same
synthetic ASGI requests) in two processes under valgrind, ``n1`` and ``n2``
requests after the same warm-up; per request is the difference divided by
``n2 - n1``, so start-up and imports cancel out, and the bare app's figures are
subtracted. perfnb's once-a-second tick is held off under valgrind (its clock
runs ~50× slower there, so the tick would fall every few requests); its cost is
measured by ``bench_middleware``. perfnb's clock is a counter stepping 1 µs per
read there, so its cache of Server-Timing values behaves the same in every run
(the real clock is a C call too; the two differ by a few dozen instructions).

    python -m benchmarks middleware_cache
    PERFNB_BENCH_QUICK=1 python -m benchmarks middleware_cache
    python -m benchmarks.bench_middleware_cache perfnb      # one contender, against bare
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CONTENDERS = ("bare", "timer", "perfnb", "prometheus")
QUICK = bool(os.environ.get("PERFNB_BENCH_QUICK"))
N1, N2 = (50, 150) if QUICK else (100, 300)
WARMUP = 50
_COUNTS = {
    "instructions": re.compile(r"I\s+refs:\s+([\d,]+)"),
    "I1 misses": re.compile(r"I1\s+misses:\s+([\d,]+)"),
    "D1 misses": re.compile(r"D1\s+misses:\s+([\d,]+)"),
    "LL misses": re.compile(r"LL misses:\s+([\d,]+)"),
}


def build(name: str) -> Any:
    """The contender ``name`` around its own copy of ``bench_middleware``'s app."""
    from benchmarks.bench_middleware import BareTimer, make_app

    app = make_app(1)
    if name == "timer":
        return BareTimer(app)
    if name == "perfnb":
        from perfnb.server import PerfnbMiddleware

        return PerfnbMiddleware(app, service="bench")
    if name == "prometheus":
        from prometheus_client import CollectorRegistry
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


def child(name: str, n: int) -> None:
    """Serve ``WARMUP`` then ``n`` requests (the process valgrind watches)."""
    from benchmarks.bench_middleware import run_batch
    from perfnb.server import PerfnbMiddleware

    app = build(name)
    if isinstance(app, PerfnbMiddleware):
        # Under valgrind the handler times vary from run to run, and with them
        # which Server-Timing values perfnb finds in its cache: a clock that
        # steps 1 µs per read (a C call, like the real one) makes runs repeat.
        from perfnb.server import asgi, exchange

        fake = itertools.count(10**15, 1000).__next__
        asgi.perf_counter_ns = exchange.perf_counter_ns = fake  # type: ignore[assignment]
    loop = asyncio.new_event_loop()
    loop.run_until_complete(run_batch(app, "/trivial", WARMUP))
    if isinstance(app, PerfnbMiddleware):
        app.recorder.tick_ns = 2**62  # see the module's docstring
    loop.run_until_complete(run_batch(app, "/trivial", n))
    loop.close()


def counted(name: str, n: int) -> dict[str, int]:
    """cachegrind's totals for a child process serving ``n`` requests."""
    # Without address randomisation, dicts keyed by id() hash the same way each run.
    fixed = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
    cmd = [
        *fixed,
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.bench_middleware_cache",
        "child",
        name,
        str(n),
    ]
    # A fixed hash seed lays dicts and sets out the same way in every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        msg = f"valgrind run of {name} failed ({done.returncode}): {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    out: dict[str, int] = {}
    for key, pattern in _COUNTS.items():
        found = pattern.search(done.stderr)
        if found is None:
            raise RuntimeError(f"no {key!r} in valgrind's summary for {name}")
        out[key] = int(found.group(1).replace(",", ""))
    return out


def main(names: tuple[str, ...] = CONTENDERS) -> None:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: skipped (Debian package valgrind)")
        return
    names = ("bare", *(name for name in names if name != "bare"))
    jobs = [(name, n) for name in names for n in (N1, N2)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: counted(*job), jobs), strict=True))
    per_request = {
        name: {
            key: (results[(name, N2)][key] - results[(name, N1)][key]) / (N2 - N1)
            for key in _COUNTS
        }
        for name in names
    }
    bare = per_request["bare"]
    print(f"trivial route, per request ({N2} - {N1} requests under valgrind's cachegrind)")
    print(f"{'':<12}" + "".join(f"{key:>14}" for key in _COUNTS))
    print(f"{'bare':<12}" + "".join(f"{bare[key]:>14,.0f}" for key in _COUNTS))
    for name in names[1:]:
        cells = "".join(f"{per_request[name][key] - bare[key]:>+14,.0f}" for key in _COUNTS)
        print(f"{'+' + name:<12}{cells}")
    if "perfnb" not in per_request:
        return
    mine = {key: per_request["perfnb"][key] - bare[key] for key in _COUNTS}
    for name, label in (("prometheus", "prometheus / perfnb"), ("timer", "perfnb / bare timer")):
        if name not in per_request:
            continue
        other = {key: per_request[name][key] - bare[key] for key in _COUNTS}
        ratios = [
            (key, other[key] / mine[key] if name == "prometheus" else mine[key] / other[key])
            for key in ("instructions", "I1 misses")
            if min(other[key], mine[key]) > 0
        ]
        print(f"added, {label}: " + ", ".join(f"{key} {r:.1f}×" for key, r in ratios))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main(tuple(sys.argv[1:]) or CONTENDERS)
