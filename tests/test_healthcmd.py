"""``perfnb health``: replay a store's detail through the health engine, show it, write it once."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_support import fill

import perfnb.healthcmd
from perfnb.analysis.healthconfig import HealthConfig
from perfnb.healthcmd import (
    REPLAY_TAG,
    ReplayConflict,
    config_fingerprint,
    main_health,
    replay_range,
    write_replay,
)
from perfnb.schema import record_from_json, validate_record
from perfnb.store import Store

FROM, TO = "2026-03-02T10:00:00Z", "2026-03-02T10:10:00Z"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # ten minutes of real traffic with a 40 s burst of 500s half way; no health records
    fill(tmp_path / "store", marks=False)
    return tmp_path / "store"


def own(root: Path) -> int:
    return len(Store(root).read(kinds=["health", "alert"]))


def test_table_shows_the_burst_as_error_rate_alerts(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_health(["--store", str(root), "--from", FROM, "--to", TO]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["time", "(UTC)", "kind", "name"]
    raised = [line for line in out.splitlines() if "error_rate" in line and "raised" in line]
    assert raised
    assert all("10:05:" in line for line in raised)
    assert "cleared" in out
    assert own(root) == 0  # without --write nothing is stored


def test_json_lines_are_valid_records(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_health(["--store", str(root), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [validate_record(record_from_json(json.loads(line))) for line in lines]
    assert {r["kind"] for r in records} == {"health", "alert"}
    assert all(r["source"] == "perfnb" for r in records)


def test_write_is_idempotent(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--store", str(root), "--from", FROM, "--to", TO, "--write"]
    assert main_health(argv) == 0
    first = own(root)
    assert first > 0
    assert main_health(argv) == 0
    assert own(root) == first
    assert "wrote 0 record(s)" in capsys.readouterr().out
    tags = Store(root).read(kinds=["alert"])["tags"].iloc[0]
    assert dict(tags)[REPLAY_TAG] == config_fingerprint(HealthConfig())


def test_a_wider_range_fills_in_only_what_is_missing(root: Path) -> None:
    store = Store(root)
    config = HealthConfig()
    early = replay_range(store, start=FROM, end="2026-03-02T10:05:20Z", config=config)
    assert write_replay(store, early, config=config, start=FROM).written == len(early)
    whole = replay_range(store, start=FROM, end=TO, config=config)
    result = write_replay(store, whole, config=config, start=FROM)
    assert result.already > 0
    assert result.written > 0
    assert own(root) == len(early) + result.written


def test_another_config_or_live_records_make_write_refuse(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_health(["--store", str(root), "--write"]) == 0
    written = own(root)
    config = tmp_path / "strict.json"
    config.write_text('{"slow_ms": 50}')
    assert main_health(["--store", str(root), "--write", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "nothing written" in err
    assert config_fingerprint(HealthConfig()) in err
    assert own(root) == written


def test_records_of_a_live_watch_make_write_refuse(tmp_path: Path) -> None:
    store = fill(tmp_path / "store", marks=True)  # health and alerts as a live watch wrote
    out = replay_range(store)
    with pytest.raises(ReplayConflict, match=r"from live"):
        write_replay(store, out, config=HealthConfig())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--store", "{tmp}/nowhere"], "--store"),
        (["--store", "{root}", "--from", "yesterday"], "--from"),
        (["--store", "{root}", "--from", TO, "--to", FROM], "--to"),
        (["--store", "{root}", "--config", "{tmp}/missing.json"], "--config"),
        (["--store", "{root}", "--config", "{tmp}/bad.json"], "not valid JSON"),
        (["--store", "{root}", "--config", "{tmp}/unknown.json"], "unknown key 'slow'"),
        (["--store", "{root}", "--config", "{tmp}/range.json"], "window_s"),
        (["--store", "{root}", "--bogus"], "unrecognized arguments"),
        ([], "--store"),
    ],
)
def test_bad_arguments_exit_2_naming_what_was_wrong(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    named: str,
) -> None:
    (tmp_path / "bad.json").write_text("{window_s: 2")
    (tmp_path / "unknown.json").write_text('{"slow": 2}')
    (tmp_path / "range.json").write_text('{"window_s": -1}')
    argv = [a.format(tmp=tmp_path, root=root) for a in args]
    assert main_health(argv) == 2
    assert named in capsys.readouterr().err
    assert own(root) == 0


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_health(["--help"]) == 0
    assert "--write" in capsys.readouterr().out


@pytest.mark.slow
def test_as_a_process(root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "perfnb.healthcmd", "--store", str(root), "--write"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "error_rate" in done.stdout
    assert "wrote " in done.stdout


def test_doctests() -> None:
    result = doctest.testmod(perfnb.healthcmd, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
