"""Does ``perfnb record`` keep up with four workers at 2,000 requests/s each?

Three processes on this machine, as a deployment would run them:

* a producer: four monitors sharing a fleet directory (four app processes' worth of
  journals), each recording 2,000 server records a second for ``SECONDS``;
* the app: uvicorn serving a Starlette app under ``PerfnbMiddleware`` with the same
  fleet directory, so its feed answers for all four;
* the recorder: ``perfnb record URL --store DIR``.

Printed: the rate produced, how long after the producer stopped the recorder had
stored everything, and each process's CPU (user + system) over the run, as a share
of one core. The app's share is what answering the feed costs the process that
answers; the recorder's is what following 8,000 records/s costs.

Run: ``python -m benchmarks recorder``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SECONDS = 15.0
PER_WORKER = 2000
WORKERS = 4

_PRODUCER = """
import sys, time
from datetime import UTC, datetime
from perfnb.server import Monitor
folder, seconds, rate, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
monitors = [Monitor(service="bench", fleet=folder, buffer_size=200_000) for _ in range(workers)]
tick = 0.01
per_tick = rate * tick
start = time.monotonic()
made = 0
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) / tick * per_tick) - made // workers
    now = datetime.now(UTC)
    for _ in range(max(0, due)):
        for m in monitors:
            m.record({"time": now, "source": "server", "kind": "http", "service": "bench",
                      "route": "/api/items/{id}", "method": "GET", "status": 200,
                      "duration_ms": 1.25, "response_bytes": 512})
        made += workers
    time.sleep(tick / 2)
for m in monitors:
    m.close()
print(made)
"""

_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from perfnb.server import PerfnbMiddleware

async def hello(request):
    return PlainTextResponse("hi")

app = PerfnbMiddleware(Starlette(routes=[Route("/", hello)]), service="bench")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _received(log: Path) -> int:
    found = re.findall(r"received (\d+) records", log.read_text())
    return int(found[-1]) if found else 0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="perfnb-bench-recorder-") as tmp:
        root = Path(tmp)
        fleet, store = root / "fleet", root / "store"
        (root / "app_mod.py").write_text(textwrap.dedent(_APP))
        env = {**os.environ, "PERFNB_FLEET_DIR": str(fleet), "PYTHONPATH": str(root)}
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        app = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "app_mod:app",
            ],
            cwd=root,
            env=env,
        )
        log = root / "recorder.log"
        recorder = None
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            with log.open("w") as out:
                recorder = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "perfnb.cli",
                        "record",
                        url,
                        "--store",
                        str(store),
                        "--progress",
                        "0.5",
                    ],
                    stderr=out,
                    env={**os.environ, "XDG_CACHE_HOME": str(root / "cache")},
                )
            time.sleep(2.0)
            app_cpu0, rec_cpu0 = _cpu_s(app.pid), _cpu_s(recorder.pid)
            started = time.monotonic()
            producer = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _PRODUCER,
                    str(fleet),
                    str(SECONDS),
                    str(PER_WORKER),
                    str(WORKERS),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            produced = int(producer.stdout.split()[-1])
            ended = time.monotonic()
            while _received(log) < produced and time.monotonic() - ended < 60:
                time.sleep(0.1)
            caught_up = time.monotonic() - ended
            wall = time.monotonic() - started
            app_cpu = _cpu_s(app.pid) - app_cpu0
            rec_cpu = _cpu_s(recorder.pid) - rec_cpu0
            received = _received(log)
        finally:
            if recorder is not None:
                recorder.send_signal(signal.SIGTERM)
                recorder.wait(timeout=60)
            app.terminate()
            app.wait(timeout=30)
        rate = produced / SECONDS
        print(
            f"produced {produced:,} records in {SECONDS:g} s from {WORKERS} journals "
            f"({rate:,.0f}/s); the recorder logged {received:,} "
            f"({'all' if received >= produced else 'NOT all'}), "
            f"{caught_up:.1f} s after the producer stopped"
        )
        print(
            f"CPU over {wall:.1f} s, share of one core: recorder {rec_cpu / wall:.2f} "
            f"({rec_cpu / max(received, 1) * 1e6:.1f} µs per record), "
            f"app answering the feed {app_cpu / wall:.2f} "
            f"({app_cpu / max(received, 1) * 1e6:.1f} µs per record)"
        )
        verdict = received >= produced and caught_up < 5.0
        print(f"keeps up with {WORKERS} x {PER_WORKER:,}/s: {'yes' if verdict else 'NO'}")


if __name__ == "__main__":
    main()
