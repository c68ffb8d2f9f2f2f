"""The load-test panel's settings, its JSON round trip and its refusals (no kernel)."""

from __future__ import annotations

import pytest

from perfnb.errors import ConfigError, TargetError
from perfnb.widgets.loadpanel import LoadTestPanel

DOC = {
    "scenario": "high_user_load",
    "parameters": {"concurrentUsers": 10, "duration": 60000, "delayBetweenCalls": 1000},
    "safetyLimits": {"maxMemoryUsage": 100, "maxErrorRate": 0.05, "emergencyStop": True},
}


def test_the_requirements_json_round_trips() -> None:
    panel = LoadTestPanel("http://127.0.0.1:9")
    panel.load_config(DOC)
    assert (panel.preset, panel.users, panel.duration, panel.think_time) == (
        "high_user_load",
        10,
        60.0,
        1.0,
    )
    assert (panel.max_memory_mb, panel.max_error_rate, panel.emergency_stop) == (100.0, 0.05, True)
    written = panel.config()
    assert written["parameters"]["duration"] == 60000
    assert written["safetyLimits"] == DOC["safetyLimits"]
    other = LoadTestPanel("http://127.0.0.1:9")
    other.load_config(written)
    assert other.config() == written


def test_rate_selects_the_open_model_in_the_json() -> None:
    panel = LoadTestPanel("http://127.0.0.1:9", rate=250.0)
    assert panel.config()["parameters"]["requestsPerSecond"] == 250.0


def test_targets_off_this_machine_are_refused_at_once() -> None:
    with pytest.raises(TargetError, match="loopback"):
        LoadTestPanel("http://example.com")


def test_an_unknown_preset_names_the_field() -> None:
    with pytest.raises(ConfigError, match="preset"):
        LoadTestPanel("http://127.0.0.1:9", preset="nope")


def test_a_bad_document_names_the_field_and_leaves_the_panel_as_it_was() -> None:
    panel = LoadTestPanel("http://127.0.0.1:9", users=7)
    with pytest.raises(ConfigError, match="concurrentUsers"):
        panel.load_config({"scenario": "api_stress", "parameters": {"concurrentUsers": "x"}})
    assert panel.users == 7


def test_a_bad_setting_shows_in_the_panel_instead_of_starting() -> None:
    panel = LoadTestPanel("http://127.0.0.1:9")
    panel.max_error_rate = 2.0
    panel.start()
    assert panel.status == "idle"
    assert "max_error_rate" in panel.error or "maxErrorRate" in panel.error


def test_stop_buttons_do_nothing_without_a_run() -> None:
    panel = LoadTestPanel("http://127.0.0.1:9")
    panel._handle_custom_msg({"type": "action", "action": "emergency_stop"}, [])
    assert panel.status == "idle"
    assert panel.summary_html() == "<p>no run yet</p>"


@pytest.mark.slow
def test_error_types_show_live_and_in_the_summary() -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    panel = LoadTestPanel(
        f"http://127.0.0.1:{port}",
        preset="high_user_load",
        users=2,
        duration=1.0,
        think_time=0.05,
        max_error_rate=0.0,
    )
    panel.start()
    result = panel.wait(timeout=60)
    assert result is not None
    assert panel.progress["error_types"].startswith("connect ")
    total = panel.summary["rows"][-1]
    assert total["error_types"] == f"connect {total['errors']}"
    assert "reconnects" in panel.summary
