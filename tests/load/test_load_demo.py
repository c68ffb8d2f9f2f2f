"""Presets, safety stops and the CLI against the real demo app on uvicorn (127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from load_target import wait_for

from perfnb.load import Limits, LoadRun, check_target
from perfnb.load.command import main_load
from perfnb.load.presets import PRESETS, build_preset
from perfnb.schema import Record
from perfnb.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("demo")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (home / "demo.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perfnb.demo",
            "--port",
            str(port),
            "--db",
            str(home / "db.sqlite3"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, what="the demo app to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _faults(url: str, **switches: object) -> None:
    response = httpx.post(f"{url}/api/admin/faults", json=switches, timeout=10)
    assert response.status_code == 200, response.text


@pytest.fixture
def demo(demo_url: str) -> Iterator[str]:
    httpx.delete(f"{demo_url}/api/admin/faults", timeout=10)
    yield demo_url
    httpx.delete(f"{demo_url}/api/admin/faults", timeout=10)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_against_the_demo_app(demo: str, name: str, tmp_path: Path) -> None:
    target = check_target(demo)
    store = Store(tmp_path / "store")
    records: list[Record] = []
    scenario, shape, _ = build_preset(
        name,
        target,
        run_id=f"test-{name}",
        overrides={
            "users": 2,
            "duration": 3.0,
            "think_time": 0.05,
            "payload_size": 20_000,
            "bulk_size": 20,
            "latency_ms": 20.0,
        },
    )
    result = (
        LoadRun(
            target,
            scenario,
            shape,
            run_id=f"test-{name}",
            workers=1,
            sink=records.append,
            store=store,
            detail_rate=1e9,
        )
        .start()
        .wait(timeout=60)
    )
    assert result.stop.reason == "completed", result.stop
    assert result.total.count > 0
    assert result.journey_errors == 0
    assert result.total.error_rate < 0.05, result.table()
    http = [r for r in records if r["kind"] == "http"]
    assert http
    assert all(r["run_id"] == f"test-{name}" and r["source"] == "load" for r in http)
    assert all("{" in r["route"] or r["route"].startswith("/api/") for r in http)
    # the same records landed in the store, tagged, and stay out of the real picture
    stored = Store(tmp_path / "store").read(include_load=True)
    assert len(stored[stored["kind"] == "http"]) == len(http)
    assert set(stored["run_id"].astype(str)) == {f"test-{name}"}
    assert Store(tmp_path / "store").read().empty


def test_error_rate_stop_fires_on_the_demo_fault(demo: str) -> None:
    target = check_target(demo)
    scenario, shape, _ = build_preset(
        "api_stress", target, run_id="test-errors", overrides={"rate": 100.0, "duration": 60.0}
    )
    run = LoadRun(
        target,
        scenario,
        shape,
        run_id="test-errors",
        workers=1,
        limits=Limits(max_error_rate=0.2, error_window=2.0, min_requests=20),
    ).start()
    wait_for(lambda: run.snapshot()["requests"] > 100, timeout=30, what="traffic")
    _faults(demo, error_rate=0.6)
    result = run.wait(timeout=30)
    assert result.stop.reason == "error_rate"
    assert result.stop.figures["error_rate"] > 0.2


def test_memory_stop_fires_on_the_leak(demo: str) -> None:
    target = check_target(demo)
    baseline = httpx.get(f"{demo}/api/performance-metrics", timeout=10).json()["metrics"][
        "memoryUsage"
    ]
    scenario, shape, _ = build_preset(
        "api_stress", target, run_id="test-leak", overrides={"rate": 200.0, "duration": 60.0}
    )
    _faults(demo, leak_kb_per_request=512)
    result = (
        LoadRun(
            target,
            scenario,
            shape,
            run_id="test-leak",
            workers=1,
            limits=Limits(max_target_memory_mb=float(baseline or 50) + 60),
        )
        .start()
        .wait(timeout=90)
    )
    assert result.stop.reason == "target_memory", result.stop
    assert result.stop.figures["target_memory_mb"] > result.stop.figures["max_target_memory_mb"]


def test_cli_runs_the_documents_config_and_prints_json(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "load.json"
    config.write_text(
        json.dumps(
            {
                "scenario": "high_user_load",
                "parameters": {
                    "concurrentUsers": 3,
                    "duration": 3000,
                    "apiCallsPerUser": 5,
                    "delayBetweenCalls": 100,
                },
                "safetyLimits": {
                    "maxMemoryUsage": 4000,
                    "maxErrorRate": 0.5,
                    "emergencyStop": True,
                },
            }
        )
    )
    status = main_load(["--target", demo, "--config", str(config), "--json", "--workers", "1"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0, out["stop"]
    assert out["stop"]["reason"] == "completed"
    assert out["total"]["count"] > 0
    assert {r["route"] for r in out["routes"]} >= {"/api/guests", "/api/poll"}


def test_cli_refuses_a_remote_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_load(["--target", "http://example.com", "--preset", "api_stress"]) == 2
    assert "not loopback" in capsys.readouterr().err


def test_cli_names_a_wrong_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_load(["--target", "http://127.0.0.1:9", "--preset", "nope"]) == 2
    assert "accepted" in capsys.readouterr().err


def test_run_single_user_and_a_notebook_style_journey(demo: str) -> None:
    from perfnb.load import Journey, Session, Users, run_single_user
    from perfnb.load.presets import Params, login_storm

    rows = run_single_user(
        Journey(login_storm, params={"params": Params(think_time=0.0)}), demo, iterations=2
    )
    assert [r["route"] for r in rows] == ["/api/guests", "/api/login", "/api/login"]
    assert [r["status"] for r in rows] == [201, 200, 200]

    seen: list[int] = []

    async def local_journey(session: Session) -> None:  # a closure: cannot be pickled
        response = await session.get("/api/health")
        seen.append(response.status_code)
        await session.think(0.05)

    run = LoadRun(demo, Journey(local_journey), Users(2, duration=1.5))
    assert run.in_process  # runs on a thread of this process instead of a worker process
    result = run.start().wait(timeout=30)
    assert result.stop.reason == "completed"
    assert result.total.count == len(seen) > 0
    assert set(seen) == {200}
