"""Every worker of a multi-process server in one feed, exactly: servers as deployed.

gunicorn with sync, gthread and uvicorn workers (with and without ``--preload``,
with workers recycled by ``--max-requests``) and ``uvicorn --workers 3`` serve a
Flask or a Starlette app with ``PERFNB_FLEET_DIR`` set. N requests from several
concurrent clients must come out of the feed as exactly N server records, each
(process, number) once, whichever worker answers the feed; the feed's processes
are the server's workers (counted by the pids the app itself reports).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from perfnb.eventstream import SSEParser

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
N = 2000
#: The route template as each framework writes it.
ROUTES = ("/hello/{n}", "/hello/<int:n>")
FEED = "/api/performance-metrics"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, argv: list[str], fleet: Path | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fleet = fleet
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        env.pop("PERFNB_FLEET_DIR", None)
        if fleet is not None:
            env["PERFNB_FLEET_DIR"] = str(fleet)
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.process = subprocess.Popen(
            argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"{argv[:3]} did not start: {err[-2000:]}")
            try:
                if httpx.get(f"{self.url}/pid", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"{argv[:3]} did not answer within 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    class Started(Server):
        def __init__(self, argv: list[str], *, fleet: bool = True) -> None:
            super().__init__(argv, tmp_path / "fleet" if fleet else None)
            started.append(self)

    try:
        yield Started  # type: ignore[misc]
    finally:
        for server in started:
            server.stop()


def _send(url: str, n: int) -> set[str]:
    """Send ``n`` requests from 8 clients; the worker pids that answered ``/pid``."""
    pids: set[str] = set()

    def one_client(k: int) -> None:
        # a new connection per request, so the server spreads them over its workers
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, timeout=30, limits=limits) as client:
            for i in range(k, n, 8):
                assert client.get(f"/hello/{i}").status_code == 200
            for _ in range(20):
                pids.add(client.get("/pid").text)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_client, range(8)))
    return pids


def _follow(
    url: str, want: int, *, timeout: float = 60.0
) -> tuple[dict[tuple[str, int], dict], set[str], str]:
    """Follow the feed from the oldest record until ``want`` hello records are in.

    Returns the records by (instance, number), the instances the hellos listed, and
    the last event id. Streams that end (a WSGI worker's, once caught up) are
    resumed with the last id, as a consumer does.
    """
    seen: dict[tuple[str, int], dict] = {}
    duplicates = 0
    instances: set[str] = set()
    last_id = ""
    deadline = time.monotonic() + timeout

    def hello_count() -> int:
        return sum(
            1 for r in seen.values() if r.get("route") in ROUTES and r.get("source") == "server"
        )

    with httpx.Client(timeout=httpx.Timeout(10, read=5)) as client:
        while time.monotonic() < deadline and hello_count() < want:
            headers = {"last-event-id": last_id} if last_id else {}
            params = {} if last_id else {"since": "oldest"}
            parser = SSEParser(last_event_id=last_id)
            try:
                with client.stream(
                    "GET", url + FEED + "/stream", headers=headers, params=params
                ) as r:
                    assert r.status_code == 200
                    for chunk in r.iter_bytes():
                        for ev in parser.feed(chunk):
                            doc = json.loads(ev.data)
                            if ev.event == "hello":
                                instances.update(i["boot"] for i in doc.get("instances", []))
                            elif ev.event == "records":
                                for offset, rec in enumerate(doc["records"]):
                                    key = (doc["instance"], doc["first"] + offset)
                                    duplicates += key in seen
                                    seen[key] = rec
                                last_id = ev.last_event_id
                            elif ev.event == "dropped":
                                pytest.fail(f"the feed dropped records: {doc}")
                        if hello_count() >= want or time.monotonic() > deadline:
                            break
            except httpx.ReadTimeout:
                pass
            time.sleep(0.05)
    assert duplicates == 0
    return seen, instances, last_id


def _check(server: Server, pids: set[str], workers: int) -> None:
    seen, _instances, last_id = _follow(server.url, N)
    hellos = [r for r in seen.values() if r.get("route") in ROUTES and r.get("source") == "server"]
    assert len(hellos) == N
    # every worker that answered is in the feed, each record names its process
    by_pid = {r["tags"]["instance"].split("-")[-2] for r in hellos}
    assert pids <= by_pid | {str(p) for p in _fleet_pids(server.fleet)}
    assert len(by_pid) >= min(workers, 2), "the server sent every request to one worker"
    # nothing more arrives after the count, and a resume from the last id is empty
    more, _, _ = _resume(server.url, last_id)
    assert [r for r in more if r.get("route") in ROUTES] == []


def _fleet_pids(folder: Path) -> set[int]:
    out = set()
    for path in folder.glob("*.jsonl"):
        if not path.name.startswith("_"):
            out.add(int(json.loads(path.open().readline())["pid"]))
    return out


def _resume(url: str, last_id: str) -> tuple[list[dict], set[str], str]:
    records: list[dict] = []
    parser = SSEParser(last_event_id=last_id)
    with httpx.Client(timeout=httpx.Timeout(10, read=1.5)) as client:
        try:
            with client.stream(
                "GET", url + FEED + "/stream", headers={"last-event-id": last_id}
            ) as r:
                for chunk in r.iter_bytes():
                    for ev in parser.feed(chunk):
                        if ev.event == "records":
                            records.extend(json.loads(ev.data)["records"])
        except httpx.ReadTimeout:
            pass
    return records, set(), last_id


GUNICORN = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "-w", "3"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([*GUNICORN, "fleet_apps:flask_app"], id="gunicorn-sync"),
        pytest.param([*GUNICORN, "--preload", "fleet_apps:flask_app"], id="gunicorn-sync-preload"),
        pytest.param(
            [*GUNICORN, "-k", "gthread", "--threads", "4", "fleet_apps:flask_app"],
            id="gunicorn-gthread",
        ),
        pytest.param(
            [
                *GUNICORN,
                "-k",
                "uvicorn_worker.UvicornWorker",
                "--preload",
                "fleet_apps:starlette_app",
            ],
            id="gunicorn-uvicorn-preload",
        ),
        pytest.param(
            [*GUNICORN, "--max-requests", "200", "fleet_apps:flask_app"],
            id="gunicorn-sync-recycled",
        ),
        pytest.param(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--port",
                "{port}",
                "--workers",
                "3",
                "--log-level",
                "warning",
                "fleet_apps:starlette_app",
            ],
            id="uvicorn-workers",
        ),
    ],
)
def test_every_worker_in_one_feed_exactly(serve: type[Server], argv: list[str]) -> None:
    server = serve(argv)
    pids = _send(server.url, N)
    _check(server, pids, workers=3)


def test_control_reaches_every_worker(serve: type[Server]) -> None:
    server = serve([*GUNICORN, "fleet_apps:flask_app"])
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post(FEED + "/control", json={"enabled": False}).status_code == 200
        time.sleep(0.5)  # every process applies it within one flush period
        states = {client.get(FEED + "/control").json()["enabled"] for _ in range(30)}
        assert states == {False}
        for i in range(100):
            client.get(f"/hello/{i}")
        client.post(FEED + "/control", json={"enabled": True})
        time.sleep(0.5)
        states = {client.get(FEED + "/control").json()["enabled"] for _ in range(30)}
        assert states == {True}
    seen, _, _ = _follow(server.url, 0, timeout=3)
    assert [r for r in seen.values() if r.get("route") in ROUTES] == []


@pytest.mark.parametrize("fleet", [True, False], ids=["fleet", "one-process"])
def test_a_sync_worker_is_never_held_by_the_feed(serve: type[Server], fleet: bool) -> None:
    # gunicorn's default: one sync worker. A consumer following the feed must not
    # keep the app's own requests waiting, with a fleet directory or without.
    server = serve(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "fleet_apps:flask_app"],
        fleet=fleet,
    )
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=30)) as follower,
        follower.stream("GET", server.url + FEED + "/stream") as stream,
    ):
        started = time.monotonic()
        for _ in stream.iter_bytes():
            pass  # the stream ends once caught up
        held = time.monotonic() - started
    answered = httpx.get(server.url + "/hello/1", timeout=10)
    assert answered.status_code == 200
    # it ended because it was caught up, long before a stream's 5 s limit
    assert held < 2.5


def test_perfnb_record_stores_every_worker_exactly(serve: type[Server], tmp_path: Path) -> None:
    server = serve([*GUNICORN, "fleet_apps:flask_app"])
    store_dir = tmp_path / "store"
    recorder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perfnb.cli",
            "record",
            server.url,
            "--store",
            str(store_dir),
            "--progress",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        pids = _send(server.url, N)
        # everything the feed holds now: the recorder is done once it received as many
        seen, _, _ = _follow(server.url, N)
        assert recorder.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = recorder.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "received " in line and int(line.split("received ")[1].split()[0]) >= len(seen):
                break
    finally:
        recorder.send_signal(signal.SIGTERM)
        _, rest = recorder.communicate(timeout=60)
    log = "".join(lines) + rest
    assert recorder.returncode == 0, log

    from perfnb.store import Store

    frame = Store(str(store_dir)).read()
    hello = frame[frame["route"].astype(str).isin(ROUTES) & (frame["source"] == "server")]
    assert len(hello) == N, log
    instances = {tags["instance"] for tags in hello["tags"]}
    assert {i.split("-")[-2] for i in instances} >= pids
    assert len(seen) >= N
