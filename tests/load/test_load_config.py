from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfnb.errors import ConfigError
from perfnb.load.config import load_config, parse_config

DOCUMENT = {
    "scenario": "high_user_load",
    "parameters": {
        "concurrentUsers": 10,
        "duration": 60000,
        "apiCallsPerUser": 5,
        "delayBetweenCalls": 1000,
    },
    "safetyLimits": {"maxMemoryUsage": 100, "maxErrorRate": 0.05, "emergencyStop": True},
}


def test_the_documents_json_is_accepted_as_written(tmp_path: Path) -> None:
    path = tmp_path / "load.json"
    path.write_text(json.dumps(DOCUMENT))
    cfg = load_config(path)
    assert cfg.scenario == "high_user_load"
    assert cfg.parameters == {"users": 10, "duration": 60.0, "calls_per_user": 5, "think_time": 1.0}
    assert cfg.limits.max_target_memory_mb == 100
    assert cfg.limits.max_error_rate == 0.05
    assert cfg.limits.emergency_stop is True


def test_the_python_form_means_the_same() -> None:
    cfg = parse_config(
        {
            "scenario": "High User Load",
            "parameters": {"users": 10, "duration": 60, "calls_per_user": 5, "think_time": 1.0},
            "safety_limits": {"max_memory_mb": 100, "max_error_rate": 0.05, "emergency_stop": True},
        }
    )
    assert cfg == parse_config(DOCUMENT)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"scenario": "everything"}, "field 'scenario'"),
        ({"scenaro": "x"}, "field 'scenaro'"),
        ({"parameters": {"concurentUsers": 10}}, "field 'parameters.concurentUsers'"),
        ({"parameters": {"concurrentUsers": "ten"}}, "field 'parameters.concurrentUsers'"),
        ({"parameters": {"concurrentUsers": 2.5}}, "field 'parameters.concurrentUsers'"),
        ({"parameters": {"duration": -1}}, "field 'parameters.duration'"),
        ({"safetyLimits": {"maxErrorRate": 5}}, "field 'safetyLimits'"),
        ({"safetyLimits": {"maxMemory": 100}}, "field 'safetyLimits.maxMemory'"),
        ({"safetyLimits": {"emergencyStop": "yes"}}, "field 'safetyLimits.emergencyStop'"),
        ({"parameters": []}, "field 'parameters'"),
    ],
)
def test_wrong_fields_are_named_with_what_is_accepted(
    change: dict[str, object], named: str
) -> None:
    data = {**DOCUMENT, **change}
    with pytest.raises(ConfigError, match="accepted") as info:
        parse_config(data)
    assert named in str(info.value)


def test_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
