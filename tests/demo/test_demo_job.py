"""``perfnb demo`` as a user runs it: a real subprocess, a real store, a summary."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from perfnb.demo.run import main_demo
from perfnb.demo.summary import format_summary, summarise
from perfnb.store import Store

pytestmark = pytest.mark.slow

# Routes the scripted client exercises in every run, however short.
ALWAYS = (
    "/api/guests",
    "/api/login",
    "/api/poll",
    "/api/cards",
    "/api/cards/{card_id}",
    "/api/cards/bulk",
    "/api/cards/export",
    "/api/presence",
    "/api/conversations",
    "/api/conversations/{conversation_id}/messages",
    "/api/logout",
)


def _job(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "perfnb.cli", "demo", "--store", str(store), *extra]


def test_demo_job_records_into_the_store_and_prints_a_summary(tmp_path: Path) -> None:
    store = tmp_path / "data"
    done = subprocess.run(
        _job(
            store,
            "--seconds",
            "60",
            "--speed",
            "20",
            "--guests",
            "4",
            "--seed",
            "3",
            "--load-users",
            "4",
            "--load-seconds",
            "5",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    table = done.stdout.split("per route", 1)[1]
    for route in ALWAYS:
        assert re.search(rf"^{re.escape(route)}\s", table, re.M), (route, done.stdout)
    assert "p95 ms" in table
    assert "network p50" in table

    frame = Store(store).read(include_load=True)
    server = frame[(frame["source"] == "server") & (frame["kind"] == "http")]
    assert set(ALWAYS) <= set(server["route"].astype(str))
    assert (server["service"].astype(str) == "demo").all()
    assert (frame["kind"] == "process").any()
    assert (frame["source"] == "client").any()

    # the preset's load ran beside the real traffic, tagged, and is left out of the real picture
    found = re.search(r"^load run (demo-load-[0-9a-f]+) \(high_user_load\)", done.stdout, re.M)
    assert found, done.stdout
    tagged = server[server["run_id"].astype(str) == found.group(1)]
    assert len(tagged) > 0
    assert "/api/guests" in set(tagged["route"].astype(str))
    real = Store(store).read(include_load=False)
    assert not (real["run_id"].astype(str) == found.group(1)).any()
    assert real["run_id"].isna().all()


def test_demo_job_tags_a_load_run_and_cleans_its_tenant(tmp_path: Path) -> None:
    store = tmp_path / "data"
    done = subprocess.run(
        _job(
            store,
            "--seconds",
            "20",
            "--speed",
            "20",
            "--guests",
            "2",
            "--run-id",
            "demo-run",
            "--preset",
            "none",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    frame = Store(store).read(include_load=True)
    server = frame[(frame["source"] == "server") & (frame["kind"] == "http")]
    api = server[server["route"].astype(str).str.startswith("/api/cards")]
    assert not api.empty
    assert (api["run_id"].astype(str) == "demo-run").all()
    assert (
        Store(store)
        .read(include_load=False, sources=["server"], kinds=["http"])["route"]
        .astype(str)
        .str.startswith("/api/cards")
        .sum()
        == 0
    )


def test_demo_job_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_demo(["--store", str(tmp_path / "data"), "--guests", "0"]) == 1
    assert "guests=0" in capsys.readouterr().err
    assert main_demo(["--store", str(tmp_path / "data"), "--run-id", "no spaces"]) == 1
    assert "run_id" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def _sigint_as_from_a_terminal() -> None:
    # A test run started in the background inherits SIGINT ignored, and would
    # hand that on; the job must start as it does from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_demo_app_too(tmp_path: Path, waiter: Callable[..., None]) -> None:
    job = subprocess.Popen(
        _job(tmp_path / "data", "--seconds", "600", "--speed", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_from_a_terminal,
    )
    try:
        assert job.stdout is not None
        first = job.stdout.readline()
        found = re.search(r"\(pid (\d+);", first)
        assert found, first
        app = psutil.Process(int(found.group(1)))
        assert "driving" in job.stdout.readline()
        job.send_signal(signal.SIGINT)
        assert job.wait(timeout=30) == 130
        waiter(
            lambda: not app.is_running() or app.status() == psutil.STATUS_ZOMBIE,
            timeout=10,
            what="the demo app to stop",
        )
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_summary_joins_client_paths_to_server_templates() -> None:
    t = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame(
        [
            {"time": t, "source": "server", "kind": "http", "route": "/api/cards/{card_id}",
             "method": "GET", "status": 200, "duration_ms": 2.0},
            {"time": t, "source": "server", "kind": "http", "route": "/api/cards/{card_id}",
             "method": "GET", "status": 503, "duration_ms": 4.0},
            {"time": t, "source": "client", "kind": "http", "route": "/api/cards/17",
             "method": "GET", "status": 200, "duration_ms": 5.0, "server_ms": 2.0},
            {"time": t, "source": "client", "kind": "http", "route": "/api/cards/18",
             "method": "GET", "status": 503, "duration_ms": 9.0, "server_ms": 4.0},
            {"time": t, "source": "perfnb", "kind": "http", "route": "/api/performance-metrics",
             "method": "GET", "status": 200, "duration_ms": 1.0},
        ]
    )  # fmt: skip
    summary = summarise(frame, templates=["/api/cards/{card_id}"])
    assert summary.to_dict("records") == [
        {
            "route": "/api/cards/{card_id}",
            "method": "GET",
            "count": 2,
            "p50_ms": 7.0,
            "p95_ms": pytest.approx(8.8),
            "p99_ms": pytest.approx(8.96),
            "errors": 0.5,
            "server_p50_ms": 3.0,
            "network_p50_ms": 4.0,
        }
    ]
    assert "/api/cards/{card_id}  GET" in format_summary(summary)
