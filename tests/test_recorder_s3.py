"""Two hosts, one recorder, one store in a bucket: counts exact, DuckDB agrees.

Two app instances on two loopback ports stand for two hosts; ``perfnb record``
follows both into ``Store("s3://…")`` on moto's S3 server on 127.0.0.1. Every
request (each with its own run id) is stored exactly once, under its own
service, and DuckDB reading the bucket's day files directly counts the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from fsspec.implementations.arrow import ArrowFSWrapper
from recorder_support import free_port, start_app, stop_app
from s3_support import BUCKET, Endpoint, moto_s3

from perfnb.store import Store

pytestmark = pytest.mark.slow

PER_HOST = 300


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def test_two_hosts_into_one_bucket(s3: Endpoint, tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/two-hosts"
    apps = {}
    for name in ("host-a", "host-b"):
        port = free_port()
        apps[name] = (
            f"http://127.0.0.1:{port}",
            start_app(port, tmp_path / f"{name}.spool", "--service", name),
        )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    log = (tmp_path / "recorder.log").open("w+")
    urls = [url for url, _ in apps.values()]
    recorder = subprocess.Popen(
        [sys.executable, "-m", "perfnb.cli", "record", *urls, "--store", uri, "--progress", "0.2"],
        stderr=log,
        env=env,
    )
    sent: dict[str, set[str]] = {name: set() for name in apps}
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(PER_HOST):
                for name, (url, _) in apps.items():
                    run_id = f"{name}-{i}"
                    assert client.get(f"{url}/hello", headers={"x-perfnb-run": run_id}).is_success
                    sent[name].add(run_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _caught_up(tmp_path / "recorder.log"):
            time.sleep(0.2)
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(timeout=60)
        for _, proc in apps.values():
            stop_app(proc)
        log.close()
    text = (tmp_path / "recorder.log").read_text()
    assert recorder.returncode == 0, text

    frame = Store(uri, wal_dir=tmp_path / "reader-wal").read(include_load=True)
    hello = frame[(frame["route"].astype(str) == "/hello") & (frame["source"] == "server")]
    # (the start-up probes of /hello carry no run id)
    tagged = hello[hello["run_id"].notna()]
    for name, ids in sent.items():
        mine = [str(r) for r in tagged[tagged["service"].astype(str) == name]["run_id"]]
        assert sorted(mine) == sorted(ids), name  # every request, each once

    con = duckdb.connect()
    con.register_filesystem(ArrowFSWrapper(s3.fs))
    rows = con.execute(
        f"""SELECT service, count(*), count(DISTINCT run_id)
            FROM read_parquet('s3://{BUCKET}/two-hosts/events/*/*.parquet', hive_partitioning=1)
            WHERE route = '/hello' AND source = 'server' AND run_id IS NOT NULL
            GROUP BY service ORDER BY service"""
    ).fetchall()
    assert rows == [(name, PER_HOST, PER_HOST) for name in sorted(apps)]


def _caught_up(log: Path) -> bool:
    """Whether the recorder's last progress line counts every request of both hosts."""
    lines = [line for line in log.read_text().splitlines() if "received " in line]
    if not lines:
        return False
    received = int(lines[-1].split("received ")[1].split()[0])
    return received >= 2 * PER_HOST
