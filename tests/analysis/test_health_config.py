"""HealthConfig: every threshold checked, errors naming the key, the value and what is accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from perfnb.analysis.healthconfig import DEFAULT_VITALS, HealthConfig
from perfnb.errors import ConfigError


def test_defaults_follow_the_requirements() -> None:
    config = HealthConfig()
    assert (config.poll_min_s, config.poll_max_s) == (2.0, 5.0)
    assert dict(config.vitals) == dict(DEFAULT_VITALS)
    assert config.leave_windows >= config.enter_windows


def test_round_trips_through_json() -> None:
    config = HealthConfig(window_s=2, polling_routes=("/api/poll", "/api/feed/*"))
    text = json.dumps(config.to_dict())
    assert HealthConfig.from_json(text) == config


def test_from_mapping_changes_only_what_it_names() -> None:
    config = HealthConfig.from_mapping({"slow_ms": 250, "vitals": {"LCP": [2000, 3500]}})
    assert config.slow_ms == 250.0
    assert dict(config.vitals) == {"LCP": (2000.0, 3500.0)}
    assert config.window_s == HealthConfig().window_s


@pytest.mark.parametrize(
    ("values", "key", "shown"),
    [
        ({"window_s": 0}, "window_s", "0"),
        ({"window_s": "5"}, "window_s", "'5'"),
        ({"enter_windows": 1.5}, "enter_windows", "1.5"),
        ({"enter_windows": True}, "enter_windows", "True"),
        ({"recover_ratio": 1.5}, "recover_ratio", "1.5"),
        ({"timeout_share": float("nan")}, "timeout_share", "nan"),
        ({"poll_max_s": 1.0}, "poll_max_s", "1.0"),
        ({"poll_failing_errors": 0.01}, "poll_failing_errors", "0.01"),
        ({"client_key": "cookie"}, "client_key", "'cookie'"),
        ({"client_key": "tag:"}, "client_key", "'tag:'"),
        ({"polling_routes": "/api/poll"}, "polling_routes", "'/api/poll'"),
        ({"vitals": {"LCP": [4000, 2500]}}, "vitals.LCP", "[4000, 2500]"),
        ({"include_load": "yes"}, "include_load", "'yes'"),
        ({"baseline_min_windows": 100, "baseline_windows": 10}, "baseline_windows", "10"),
        ({"slow": 5}, "slow", "5"),
    ],
)
def test_bad_values_name_the_key_and_the_value(
    values: dict[str, Any], key: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        HealthConfig.from_mapping(values)
    message = str(info.value)
    assert repr(key) in message
    assert shown in message
    assert "expected" in message or "accepted" in message


def test_not_a_mapping_or_not_json() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        HealthConfig.from_mapping([("window_s", 1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not valid JSON"):
        HealthConfig.from_json("{window_s: 1}")
    with pytest.raises(ConfigError, match="expected a mapping"):
        HealthConfig.from_json("[1, 2]")


def test_replace_checks_too() -> None:
    assert HealthConfig().replace(min_requests=3).min_requests == 3
    with pytest.raises(ConfigError, match="'min_requests'"):
        HealthConfig().replace(min_requests=0)


def test_the_feed_snapshot_uses_the_same_default_thresholds() -> None:
    from datetime import UTC, datetime

    from perfnb.server.snapshot import VITAL_THRESHOLDS, build_snapshot

    config = HealthConfig()
    assert dict(VITAL_THRESHOLDS) == dict(config.vitals)
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def polling(errors: int) -> str:
        records = [
            {
                "time": t,
                "source": "server",
                "kind": "http",
                "route": "/api/poll",
                "status": 500 if i < errors else 200,
                "duration_ms": 1.0,
            }
            for i in range(100)
        ]
        return build_snapshot(records, now=t.timestamp() + 1)["health"]["apiPolling"]  # type: ignore[arg-type]

    assert polling(round(100 * config.poll_degraded_errors) - 1) == "healthy"
    assert polling(round(100 * config.poll_degraded_errors)) == "degraded"
    assert polling(round(100 * config.poll_failing_errors)) == "failing"
