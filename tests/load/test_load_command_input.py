"""Bad input to ``perfnb load``: one clear line, exit status 2, and no request sent.

Every case points the command at the real target app (uvicorn on 127.0.0.1, which
logs every request it sees) with the API Stress preset, whose setup sends requests
at once; the app's log must stay empty. Most cases call the command in-process;
a few run ``python -m perfnb.cli load`` as a real process, where a traceback
would show on stderr.
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from load_target import TargetApp, served

from perfnb.errors import ConfigError, TargetError
from perfnb.load.command import main_load
from perfnb.load.config import load_config, parse_config
from perfnb.load.engine import check_target
from perfnb.load.pool import worker_count
from perfnb.load.presets import build_preset, check_preset
from perfnb.load.scenarios import Endpoint, Endpoints


@pytest.fixture(scope="module")
def one_app() -> Iterator[TargetApp]:
    """One target app for the module (as conftest's ``target``): refusals leave it idle."""
    with served(TargetApp()) as app:
        yield app


@pytest.fixture
def target(one_app: TargetApp) -> TargetApp:
    """The module's target app with an empty request log."""
    one_app.log.clear()
    return one_app


def _config(body: str) -> bytes:
    return ('{"scenario": "api_stress", "parameters": {' + body + "}}").encode()


# (file bytes, what the one line must name)
CONFIGS = {
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
    "not-utf8": (b'{"scenario": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at offset 17)"),
    "invalid-json": (b'{"scenario": "api_stress",\n "parameters": {,}}', "line 2, column 17"),
    "empty": (b"", "line 1, column 1"),
    "infinite-rate": (_config('"requestsPerSecond": Infinity'), "'parameters.requestsPerSecond'"),
    "nan-rate": (_config('"requestsPerSecond": NaN'), "'parameters.requestsPerSecond'"),
    "overflowing-rate": (_config('"requestsPerSecond": 1e400'), "a finite number"),
    "zero-rate": (_config('"requestsPerSecond": 0'), "a finite number > 0"),
    "bool-users": (_config('"concurrentUsers": true'), "'parameters.concurrentUsers'"),
    "negative-duration": (_config('"duration": -1000'), "'parameters.duration'"),
    "zero-bandwidth": (_config('"bandwidth": 0'), "'parameters.bandwidth'"),
    "long-number": (_config('"concurrentUsers": ' + "9" * 5000), "5000 digits"),
    "twice-users": (_config('"users": 5, "concurrentUsers": 6'), "'users' gives it already"),
    "unknown-preset": (b'{"scenario": "everything"}', "field 'scenario': got 'everything'"),
    "not-an-object": (b"[1, 2]", "configuration: got [1, 2]"),
}

# (options after --target, what the one line must name); {url} is the target app
OPTIONS = {
    "unclosed-ipv6": (["--target", "http://[::1", "--preset", "api_stress"], "'http://[::1'"),
    "port-0": (["--target", "http://127.0.0.1:0", "--preset", "api_stress"], "port 0"),
    "port-too-big": (["--target", "http://127.0.0.1:70000", "--preset", "api_stress"], "1-65535"),
    "query": (["--target", "{url}/?x=1", "--preset", "api_stress"], "a query"),
    "space-in-path": (["--target", "{url}/a b", "--preset", "api_stress"], "' '"),
    "not-loopback": (["--target", "http://example.com", "--preset", "api_stress"], "--allow-host"),
    "workers": (["--target", "{url}", "--preset", "api_stress", "--workers", "-1"], "--workers -1"),
    "workers-text": (["--target", "{url}", "--preset", "api_stress", "--workers", "x"], "'x'"),
    "rate-inf": (["--target", "{url}", "--preset", "api_stress", "--rate", "inf"], "--rate inf"),
    "rate-nan": (["--target", "{url}", "--preset", "api_stress", "--rate", "nan"], "--rate nan"),
    "users-0": (["--target", "{url}", "--preset", "api_stress", "--users", "0"], "--users 0"),
    "users-and-rate": (
        ["--target", "{url}", "--preset", "api_stress", "--users", "2", "--rate", "5"],
        "one of them",
    ),
    "duration": (["--target", "{url}", "--preset", "api_stress", "--duration", "0s"], "'0s'"),
    "preset": (["--target", "{url}", "--preset", "everything"], "'everything'"),
    "no-preset": (["--target", "{url}"], "give --preset"),
    "run-id": (
        ["--target", "{url}", "--preset", "api_stress", "--run-id", "a\r\nX: 1"],
        "--run-id",
    ),
    "store": (["--target", "{url}", "--preset", "api_stress", "--store", "{file}/sub"], "--store"),
    "no-target": (["--preset", "api_stress"], "--target"),
}


def _one_refusal(stderr: str, named: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("perfnb load: "), stderr
    assert "Traceback" not in stderr
    assert named in lines[0], stderr


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_bad_config_file_is_refused_on_one_line_before_any_request(
    case: str, target: TargetApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, named = CONFIGS[case]
    path = tmp_path / "load.json"
    path.write_bytes(content)
    code = main_load(["--target", target.url, "--config", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    _one_refusal(captured.err, named)
    assert target.log == []


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_a_bad_option_is_refused_on_one_line_before_any_request(
    case: str, target: TargetApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options, named = OPTIONS[case]
    (tmp_path / "file").write_text("a file, not a folder")
    argv = [o.format(url=target.url, file=tmp_path / "file") for o in options]
    code = main_load(argv)
    captured = capsys.readouterr()
    assert code == 2
    _one_refusal(captured.err, named)
    assert "allow_hosts" not in captured.err
    assert target.log == []


# (config file bytes, more options, what the one line must name)
PROCESSES = {
    "deep": (b"[" * 100_000 + b"]" * 100_000, [], "nested deeper than 32 levels"),
    "infinite": (_config('"requestsPerSecond": Infinity'), [], "requestsPerSecond"),
    "workers": (_config('"users": 2'), ["--workers", "-1"], "--workers -1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(PROCESSES))
def test_the_command_process_refuses_with_one_line_and_status_2(
    case: str, target: TargetApp, tmp_path: Path
) -> None:
    content, options, named = PROCESSES[case]
    path = tmp_path / f"{case}.json"
    path.write_bytes(content)
    command = [sys.executable, "-m", "perfnb.cli", "load", "--target", target.url]
    done = subprocess.run(
        [*command, "--config", str(path), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    _one_refusal(done.stderr, named)
    assert target.log == []


def test_the_allow_list_refusal_names_the_python_keyword_outside_the_command() -> None:
    with pytest.raises(TargetError, match="listed explicitly with allow_hosts"):
        check_target("http://example.com")
    with pytest.raises(TargetError, match="listed explicitly with --allow-host"):
        check_target("http://example.com", allow_option="--allow-host")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://[::1", "is not a URL"),
        ("http://[127.0.0.1]:80", "is not a URL"),
        ("http://127.0.0.1:0", "port 0 is out of range; accepted: 1-65535"),
        ("http://127.0.0.1:x", "the port is not a number in 1-65535"),
        ("http://user@127.0.0.1:8000", "user name"),
        ("http://127.0.0.1:8000/#top", "fragment"),
        ("http://127.0.0.1:8000/caf\u00e9", "'é'"),
    ],
)
def test_urls_that_cannot_be_used_as_they_are_are_refused(url: str, named: str) -> None:
    with pytest.raises(TargetError) as info:
        check_target(url)
    assert named in str(info.value)


def test_an_empty_port_still_means_the_schemes_default() -> None:
    assert check_target("http://127.0.0.1:/").port == 80
    assert check_target("https://127.0.0.1").port == 443


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"rate": math.inf}, "rate=inf"),
        ({"rate": math.nan}, "rate=nan"),
        ({"users": True}, "users=True"),
        ({"users": 2.5}, "users=2.5"),
        ({"duration": -1}, "duration=-1"),
        ({"calls_per_user": 0}, "calls_per_user=0"),
        ({"bandwidth_kbps": 0}, "bandwidth_kbps=0"),
        ({"think_time": "1s"}, "think_time='1s'"),
        ({"mapping": "demo"}, "mapping='demo'"),
    ],
)
def test_preset_parameters_from_python_are_checked_before_any_request(
    overrides: dict[str, object], named: str, target: TargetApp
) -> None:
    with pytest.raises(ConfigError, match="accepted") as info:
        build_preset("api_stress", check_target(target.url), run_id="r", overrides=overrides)
    assert named in str(info.value)
    assert target.log == []


def test_an_unknown_preset_from_python_is_named() -> None:
    with pytest.raises(ConfigError, match=r"preset 3 is unknown; accepted: api_stress"):
        check_preset(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [-1, True, 1.5, "2"])
def test_worker_counts_that_are_not_whole_numbers_from_zero_are_refused(workers: object) -> None:
    with pytest.raises(ConfigError, match=r"workers=.*: accepted: 0"):
        worker_count(workers, Endpoints([Endpoint("GET", "/")]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"scenario": "api_stress", "parameters": {"rate": 10**400}}, "a finite number"),
        (
            {"scenario": "api_stress", "safetyLimits": {"maxDuration": math.inf}},
            "'safetyLimits.maxDuration'",
        ),
        (
            {"scenario": "api_stress", "safetyLimits": {}, "safety_limits": {}},
            "one of it and 'safetyLimits'",
        ),
        (
            {
                "scenario": "api_stress",
                "safety_limits": {"max_memory_mb": 5, "max_target_memory_mb": 6},
            },
            "another gives it already",
        ),
        ({"scenario": "api_stress", "parameters": {"x" * 500: 1}}, "'parameters.xxx"),
    ],
)
def test_python_configurations_get_the_same_checks(data: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match="accepted") as info:
        parse_config(data)
    assert named in str(info.value)
    assert len(str(info.value)) < 400


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"scenario": "api_stress"}).encode())
    assert load_config(path).scenario == "api_stress"


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    path.write_bytes(b" " * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(path)


@pytest.mark.parametrize(
    "module", ["perfnb.load.config", "perfnb.load.presets", "perfnb.load.pool"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_perfnb_impact_names_its_own_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from perfnb.load.impact import main_impact

    assert main_impact(["--target", "http://192.0.2.1:8000", "--path", "/"]) == 2
    err = capsys.readouterr().err
    assert "--allow-host" in err
    assert "allow_hosts" not in err
