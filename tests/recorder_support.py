"""Helpers of the recorder tests: app processes, traffic with unique ids, recorders, stores."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from server.feed_support import free_socket

from perfnb.schema import epoch_us
from perfnb.store import Store

APP = Path(__file__).parent / "feedclient_app.py"

#: time (µs), source, kind, name, route, run_id, tags (``k=v,...``)
Identity = tuple[int, str, str, str | None, str | None, str | None, str]


def free_port() -> int:
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


def start_app(port: int, spool: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The test app on ``port``, answering once this returns."""
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(port), str(spool), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the app on port {port} did not start")
        time.sleep(0.05)


def stop_app(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the graceful shutdown writes the spool), SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def app_process(port: int, spool: Path, *extra: str) -> Iterator[str]:
    proc = start_app(port, spool, *extra)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_app(proc)


def taken(journal: Path) -> list[Identity]:
    """Every record an app took so far, in its order (its ``--journal``, feedclient_app.py)."""
    rows = [json.loads(line) for line in journal.read_text().splitlines() if line.endswith("]")]
    return [(int(t), s, k, n, r, run, tags) for t, s, k, n, r, run, tags in rows]


class Traffic:
    """``GET /hello`` to each URL in turn, each with a unique run id, at about ``rate``/s."""

    def __init__(self, *urls: str, rate: float) -> None:
        self._urls = urls
        self._pause = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        #: Run ids of the requests the app answered, per URL.
        self.sent: dict[str, list[str]] = {url: [] for url in urls}
        self.failed = 0
        self._bursts = 0

    def _run(self) -> None:
        number = 0
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                for url in self._urls:
                    run_id = f"req-{number}"
                    number += 1
                    try:
                        client.get(f"{url}/hello", headers={"x-perfnb-run": run_id})
                        self.sent[url].append(run_id)
                    except httpx.HTTPError:
                        self.failed += 1
                self._stop.wait(self._pause)

    def burst(self, count: int) -> None:
        """``count`` requests to the first URL at once, from the calling thread."""
        url = self._urls[0]
        with httpx.Client(timeout=5) as client:
            for number in range(count):
                run_id = f"burst-{self._bursts}-{number}"
                client.get(f"{url}/hello", headers={"x-perfnb-run": run_id})
                self.sent[url].append(run_id)
        self._bursts += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def start_recorder(store: Path, log: Path, *args: str) -> tuple[subprocess.Popen[bytes], Any]:
    """``perfnb record ARGS --store STORE`` logging into ``log``; returns the process and file."""
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfnb.cli", "record", *args, "--store", str(store)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc, out


def wait_for_line(log: Path, text: str, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def wait_until_quiet(log: Path, *, seconds: float, timeout: float) -> bool:
    """Wait until the recorder's progress count has not moved for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        counts = re.findall(r"received (\d+) records", log.read_text(errors="replace"))
        now = counts[-1] if counts else None
        if now != last:
            last, since = now, time.monotonic()
        elif now is not None and time.monotonic() - since >= seconds:
            return True
        time.sleep(0.05)
    return False


def stored(store: Path, *, service: str | None = None) -> list[Identity]:
    """The identities of the records in ``store`` (of ``service``), in time order."""
    frame = Store(store).read(include_load=True)
    if service is not None:
        frame = frame[frame["service"].astype(str) == service]
    return [
        (
            epoch_us(row.time.to_pydatetime()),
            str(row.source),
            str(row.kind),
            None if pd.isna(row.name) else str(row.name),
            None if pd.isna(row.route) else str(row.route),
            None if pd.isna(row.run_id) else str(row.run_id),
            _tags(row.tags),
        )
        for row in frame.itertuples()
    ]


def _tags(value: Any) -> str:
    if value is None or (not isinstance(value, dict | list) and pd.isna(value)):
        return ""
    pairs = value.items() if isinstance(value, dict) else value
    return ",".join(f"{k}={v}" for k, v in sorted(pairs))
