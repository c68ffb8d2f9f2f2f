"""The feed client against a real app process: restarts, spool, resume, the recorder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server.feed_support import free_socket

from perfnb.feedclient import connect
from perfnb.schema import Record

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "feedclient_app.py"


def _port() -> int:
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _app(port: int, spool: Path, *extra: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(port), str(spool), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if httpx.get(f"{url}/hello", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else b""
                raise RuntimeError(f"app did not start: {out.decode(errors='replace')}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()  # SIGTERM: graceful shutdown writes the spool
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done
    assert proc.returncode in (0, -15), (proc.stdout.read() if proc.stdout else b"").decode()


def _hello_routes(records: list[Record]) -> int:
    return sum(1 for r in records if r.get("route") == "/hello" and r["source"] == "server")


def test_the_feed_resumes_after_an_app_restart_with_nothing_lost(tmp_path: Path) -> None:
    spool = tmp_path / "feed.spool"
    port = _port()
    got: list[Record] = []
    gate = threading.Event()
    gate.set()

    def slow_sink(rec: Record) -> None:
        gate.wait()
        got.append(rec)

    with _app(port, spool) as url:  # one /hello made by the start-up probe
        conn = connect(url, sink=slow_sink, backoff=(0.05, 0.5))
        for _ in range(9):
            httpx.get(f"{url}/hello")
        assert conn.wait_for(lambda c: _hello_routes(got) == 10, timeout=15)
        last_before = conn.last_event_id
        gate.clear()  # the client stalls: what follows is still in the app's buffer
        for _ in range(15):
            httpx.get(f"{url}/hello")
    assert spool.exists()
    gate.set()
    with _app(port, spool) as url:  # the probe makes one more
        assert not spool.exists()
        for _ in range(4):
            httpx.get(f"{url}/hello")
        assert conn.wait_for(lambda c: _hello_routes(got) >= 30, timeout=20)
        conn.close()
    assert _hello_routes(got) == 30, "every request exactly once"
    assert conn.dropped == 0
    assert conn.boot_changes == 0
    assert conn.last_event_id.split(":")[0] == last_before.split(":")[0]


def test_a_new_connection_resumes_from_a_saved_event_id(tmp_path: Path) -> None:
    spool = tmp_path / "feed.spool"
    port = _port()
    first: list[Record] = []
    with _app(port, spool) as url:
        with connect(url, sink=first.append) as conn:
            assert conn.wait_for(lambda c: _hello_routes(first) == 1, timeout=15)
            saved = conn.last_event_id
        for _ in range(6):
            httpx.get(f"{url}/hello")
    later: list[Record] = []
    with _app(port, spool) as url, connect(url, sink=later.append, last_event_id=saved) as conn:
        assert conn.wait_for(lambda c: _hello_routes(later) == 7, timeout=15)
        assert conn.dropped == 0


def test_a_restart_without_spool_is_counted_as_a_boot_change(tmp_path: Path) -> None:
    port = _port()
    got: list[Record] = []
    with _app(port, tmp_path / "a.spool") as url:
        conn = connect(url, sink=got.append, backoff=(0.05, 0.5))
        assert conn.wait_for(lambda c: _hello_routes(got) == 1, timeout=15)
    with _app(port, tmp_path / "b.spool"):
        assert conn.wait_for(lambda c: c.boot_changes == 1, timeout=20)
        assert conn.wait_for(lambda c: _hello_routes(got) == 2, timeout=15)
        conn.close()


# -- the recorder ----------------------------------------------------------------------


def test_perfnb_record_writes_the_store_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    port = _port()
    with _app(port, tmp_path / "feed.spool", "--token", "s3cret") as url:
        for _ in range(29):
            httpx.get(f"{url}/hello")
        recorder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from perfnb.feedclient import main_record; "
                "raise SystemExit(main_record(sys.argv[1:]))",
                url,
                "--store",
                str(store_dir),
                "--token",
                "s3cret",
                "--progress",
                "0.1",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert recorder.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = recorder.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "received" in line and int(line.split("received ")[1].split()[0]) >= 30:
                break
        recorder.send_signal(15)
        _, rest = recorder.communicate(timeout=30)
    log = "".join(lines) + rest
    assert recorder.returncode == 0, log
    assert "stopped:" in log
    assert "0 missed" in log

    from perfnb.store import Store

    frame = Store(str(store_dir)).read()
    hello = frame[(frame["route"].astype(str) == "/hello") & (frame["source"] == "server")]
    assert len(hello) == 30
