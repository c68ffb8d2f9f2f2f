"""Load generators side by side against one loopback nginx: requests per CPU-second.

Contenders, each driving 32 keep-alive connections for a few seconds, in rounds:
perfnb's engine (one worker process), aiohttp, Locust's FastHttpUser (headless)
and wrk. The figure is requests per CPU-second *of the generator* (its own
process CPU time, user + system). Then, at one connection, the latency the
client adds: perfnb's p50 minus wrk's p50 against the same server. Last, the
open model at 2,000 requests/s on one worker, with uvloop and with asyncio in
alternating rounds: how closely it holds the rate and how much of a core it burns.

The target is Debian's nginx serving a tiny static answer from a temp dir; when
nginx is missing, a uvicorn + httptools raw ASGI app stands in (and says so).

Run: ``python -m benchmarks load``. Needs ``aiohttp`` and ``locust`` in the venv
and Debian's ``wrk`` for the full table (missing ones are reported, not fatal).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CONNECTIONS = 32
SECONDS = 3.0
ROUNDS = 3
OPEN_RATE = 2000.0
OPEN_SECONDS = 6.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def _target() -> Iterator[tuple[str, str]]:
    """Yield (url, description) of a fast loopback server, stopped afterwards."""
    port = _free_port()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-") as tmp:
        if nginx:
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(
                textwrap.dedent(
                    f"""
                    worker_processes 1;
                    daemon off;
                    pid {tmp}/nginx.pid;
                    error_log {tmp}/error.log warn;
                    events {{ worker_connections 4096; }}
                    http {{
                        access_log off;
                        keepalive_requests 10000000;
                        keepalive_timeout 60s;
                        client_body_temp_path {tmp}/body;
                        proxy_temp_path {tmp}/proxy;
                        fastcgi_temp_path {tmp}/fastcgi;
                        uwsgi_temp_path {tmp}/uwsgi;
                        scgi_temp_path {tmp}/scgi;
                        server {{
                            listen 127.0.0.1:{port};
                            location / {{ default_type text/plain; return 200 "ok\\n"; }}
                        }}
                    }}
                    """
                )
            )
            proc = subprocess.Popen([nginx, "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)
            what = "nginx (Debian), 1 worker, static 3-byte answer"
        else:
            code = textwrap.dedent(
                f"""
                import uvicorn
                async def app(scope, receive, send):
                    if scope["type"] != "http":
                        return
                    await send({{"type": "http.response.start", "status": 200,
                                 "headers": [(b"content-type", b"text/plain")]}})
                    await send({{"type": "http.response.body", "body": b"ok\\n"}})
                uvicorn.run(app, host="127.0.0.1", port={port}, http="httptools",
                            loop="uvloop", log_level="error", access_log=False)
                """
            )
            proc = subprocess.Popen([sys.executable, "-c", code])
            what = "uvicorn+httptools raw ASGI (nginx missing: apt-get install nginx)"
        try:
            _wait_port(port)
            yield f"http://127.0.0.1:{port}", what
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# -- contenders: each returns (requests, generator CPU seconds) ---------------------
def run_perfnb(url: str, seconds: float, connections: int) -> tuple[int, float]:
    from perfnb.load import Endpoint, Endpoints, Users, run_load

    result = run_load(
        url, Endpoints([Endpoint("GET", "/")]), Users(connections, duration=seconds), workers=1
    )
    cpu = result.worker_cpu[0] * result.elapsed_s
    return result.total.count, cpu


_AIOHTTP = """
import asyncio, json, resource, sys, time
import aiohttp
url, seconds, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
async def main():
    count = 0
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def user():
            nonlocal count
            while time.monotonic() < end:
                async with session.get(url) as r:
                    await r.read()
                count += 1
        await asyncio.gather(*(user() for _ in range(conns)))
    return count
count = asyncio.run(main())
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"count": count, "cpu": ru.ru_utime + ru.ru_stime}))
"""


def run_aiohttp(url: str, seconds: float, connections: int) -> tuple[int, float]:
    # startup (imports) is included in the CPU; it is small next to the run
    out = subprocess.run(
        [sys.executable, "-c", _AIOHTTP, url + "/", str(seconds), str(connections)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return int(data["count"]), float(data["cpu"])


_LOCUSTFILE = """
from locust import FastHttpUser, constant, task
class Bench(FastHttpUser):
    wait_time = constant(0)
    @task
    def hit(self):
        self.client.get("/")
"""


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_locust(url: str, seconds: float, connections: int) -> tuple[int, float]:
    locust = Path(sys.executable).with_name("locust")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "locustfile.py"
        file.write_text(_LOCUSTFILE)
        before = _children_cpu()
        subprocess.run(
            [
                str(locust),
                "-f",
                str(file),
                "--headless",
                "-u",
                str(connections),
                "-r",
                str(connections),
                "-t",
                f"{int(seconds)}s",
                "--host",
                url,
                "--csv",
                f"{tmp}/out",
                "--only-summary",
                "--loglevel",
                "ERROR",
                "--stop-timeout",
                "1",
            ],
            capture_output=True,
            check=False,
            cwd=tmp,
        )
        cpu = _children_cpu() - before
        text = (Path(tmp) / "out_stats.csv").read_text()
    for line in text.splitlines():
        if ",Aggregated," in line:
            return int(line.split(",")[2]), cpu
    raise RuntimeError("locust wrote no Aggregated row")


def _wrk(url: str, seconds: float, connections: int) -> tuple[int, float, float]:
    before = _children_cpu()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url + "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = _children_cpu() - before
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p50_ms = float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")
    return count, cpu, p50_ms


def run_wrk(url: str, seconds: float, connections: int) -> tuple[int, float]:
    count, cpu, _ = _wrk(url, seconds, connections)
    return count, cpu


def _available(name: str) -> str:
    if name == "aiohttp":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            return "missing (pip install aiohttp)"
    if name == "locust" and not Path(sys.executable).with_name("locust").exists():
        return "missing (pip install locust)"
    if name == "wrk" and not shutil.which("wrk"):
        return "missing (apt-get install wrk)"
    return ""


def _open_model(url: str, *, use_uvloop: bool) -> tuple[float, float, float, bool, float]:
    """(worst interior second's error vs the rate, overall error, send lag p99, reliable,
    the worker's CPU share of a core)."""
    from perfnb.load import ConstantRate, Endpoint, Endpoints, run_load
    from perfnb.schema import Record

    records: list[Record] = []
    result = run_load(
        url,
        Endpoints([Endpoint("GET", "/")]),
        ConstantRate(OPEN_RATE, duration=OPEN_SECONDS),
        workers=1,
        sink=records.append,
        use_uvloop=use_uvloop,
    )
    per_second: Counter[float] = Counter()
    for r in records:
        if r.get("name") == "requests":
            per_second[r["time"].timestamp()] += int(r.get("value", 0))
    interior = [per_second[s] for s in sorted(per_second)[1:-1]]
    worst = max(abs(c - OPEN_RATE) / OPEN_RATE for c in interior) if interior else float("nan")
    overall = abs(statistics.mean(interior) - OPEN_RATE) / OPEN_RATE if interior else float("nan")
    return worst, overall, result.send_lag_p99_ms, result.reliable, result.worker_cpu[0]


def main() -> None:
    contenders: dict[str, Callable[[str, float, int], tuple[int, float]]] = {
        "perfnb engine": run_perfnb,
        "aiohttp": run_aiohttp,
        "locust FastHttpUser": run_locust,
        "wrk": run_wrk,
    }
    needs = {"aiohttp": "aiohttp", "locust FastHttpUser": "locust", "wrk": "wrk"}
    with _target() as (url, what):
        print(
            f"target: {what} at {url}; {CONNECTIONS} connections, {SECONDS:g} s x {ROUNDS} rounds"
        )
        per_cpu: dict[str, list[float]] = {name: [] for name in contenders}
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        skipped = {n: _available(needs[n]) for n in needs if _available(needs[n])}
        for _ in range(ROUNDS):
            for name, fn in contenders.items():
                if name in skipped:
                    continue
                count, cpu = fn(url, SECONDS, CONNECTIONS)
                per_cpu[name].append(count / cpu if cpu > 0 else float("nan"))
                rates[name].append(count / SECONDS)
        head = ("generator", "req/CPU-s (median)", "req/s (median)", "vs perfnb")
        print(f"\n{head[0]:<22} {head[1]:>20} {head[2]:>16} {head[3]:>10}")
        ours = statistics.median(per_cpu["perfnb engine"])
        for name in contenders:
            if name in skipped:
                print(f"{name:<22} {skipped[name]:>20}")
                continue
            med = statistics.median(per_cpu[name])
            rate = statistics.median(rates[name])
            print(f"{name:<22} {med:>20,.0f} {rate:>16,.0f} {med / ours:>9.2f}x")
        verdict = "met" if ours >= 10_000 else "NOT met"
        print(f"target ≥ 10,000 requests per CPU-second: {verdict} ({ours:,.0f})")

        # latency the client adds, at one connection
        from perfnb.load import Endpoint, Endpoints, Users, run_load

        ours_p50: list[float] = []
        wrk_p50: list[float] = []
        for _ in range(ROUNDS):
            r = run_load(
                url, Endpoints([Endpoint("GET", "/")]), Users(1, duration=SECONDS), workers=1
            )
            ours_p50.append(r.total.p50_ms)
            if "wrk" not in skipped:
                wrk_p50.append(_wrk(url, SECONDS, 1)[2])
        print(f"\none connection: perfnb p50 {statistics.median(ours_p50) * 1000:.0f} µs", end="")
        if wrk_p50:
            added = statistics.median(ours_p50) - statistics.median(wrk_p50)
            print(
                f", wrk p50 {statistics.median(wrk_p50) * 1000:.0f} µs → perfnb adds "
                f"{added * 1000:.0f} µs (target ≤ 100 µs: {'met' if added <= 0.1 else 'NOT met'})"
            )
        else:
            print(" (wrk missing: no comparison)")

        # the open model on each event loop, in alternating rounds
        loops = {"uvloop": True, "asyncio": False}
        runs: dict[str, list[tuple[float, float, float, bool, float]]] = {n: [] for n in loops}
        for _ in range(ROUNDS):
            for name, use_uvloop in loops.items():
                runs[name].append(_open_model(url, use_uvloop=use_uvloop))
        print(
            f"\nopen model {OPEN_RATE:,.0f}/s on one worker, {OPEN_SECONDS:g} s x {ROUNDS} rounds:"
        )
        print(f"{'loop':<8} {'mean off':>9} {'worst s':>8} {'lag p99':>9} {'CPU/core':>9} reliable")
        for name, rows in runs.items():
            worst = statistics.median(r[0] for r in rows)
            overall = statistics.median(r[1] for r in rows)
            lag99 = statistics.median(r[2] for r in rows)
            cpu = statistics.median(r[4] for r in rows)
            print(
                f"{name:<8} {overall:>9.2%} {worst:>8.2%} {lag99:>7.2f}ms {cpu:>9.2f} "
                f"{sum(r[3] for r in rows)}/{len(rows)}"
            )
        cpus = {name: statistics.median(r[4] for r in rows) for name, rows in runs.items()}
        print(
            "targets: rate within ±1% (mean of interior seconds); ≤ 0.2 of a core with either "
            f"loop: {'met' if max(cpus.values()) <= 0.2 else 'NOT met'} "
            f"(uvloop {cpus['uvloop']:.2f}, asyncio {cpus['asyncio']:.2f})"
        )
    print(f"(machine: {os.cpu_count()} cores, shared; figures are medians of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
