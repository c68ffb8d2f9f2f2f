"""The fault switches: validated, settable at run time, and each one really misbehaves."""

from __future__ import annotations

import random
from typing import Any

import httpx
import psutil
import pytest

from perfnb.demo.api import FAULTY_ROUTES
from perfnb.demo.faults import FaultError, Faults

# -- the switches themselves (pure logic) ---------------------------------------------


def test_switches_are_off_by_default() -> None:
    state = Faults().as_json()
    assert state == {
        "slow_db_ms": 0.0,
        "error_rate": 0.0,
        "leak_kb_per_request": 0.0,
        "polling_runaway": False,
        "timeout_ms": 0.0,
        "routes": [],
        "leaked_bytes": 0,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": "0.5"}, "error_rate"),
        ({"error_rate": True}, "error_rate"),
        ({"slow_db_ms": float("nan")}, "slow_db_ms"),
        ({"slow_db_ms": 10**9}, "slow_db_ms"),
        ({"timeout_ms": None}, "timeout_ms"),
        ({"leak_kb_per_request": -1}, "leak_kb_per_request"),
        ({"polling_runaway": "yes"}, "polling_runaway"),
        ({"routes": "/api/cards"}, "routes"),
        ({"routes": ["/api/nowhere"]}, "routes"),
        ({"slow_db": 10}, "slow_db"),
    ],
)
def test_bad_values_name_the_switch_and_change_nothing(changes: dict[str, Any], field: str) -> None:
    faults = Faults(known_routes=FAULTY_ROUTES)
    faults.update({"slow_db_ms": 5})
    with pytest.raises(FaultError, match=repr(field)) as info:
        faults.update({"timeout_ms": 7, **changes})
    assert info.value.field == field
    assert faults.state.slow_db_ms == 5
    assert faults.state.timeout_ms == 0


def test_routes_limit_where_faults_apply() -> None:
    faults = Faults(known_routes=FAULTY_ROUTES)
    faults.update({"routes": ["/api/poll"]})
    assert faults.state.applies_to("/api/poll")
    assert not faults.state.applies_to("/api/cards")
    faults.update({"routes": []})
    assert faults.state.applies_to("/api/cards")


def test_error_draws_follow_the_rate() -> None:
    faults = Faults(rng=random.Random(7))
    faults.update({"error_rate": 0.3})
    hits = sum(faults.should_fail() for _ in range(10_000))
    assert 2_700 < hits < 3_300
    faults.update({"error_rate": 0})
    assert not any(faults.should_fail() for _ in range(1000))


def test_leak_holds_memory_until_reset() -> None:
    faults = Faults()
    faults.update({"leak_kb_per_request": 64})
    for _ in range(10):
        faults.leak()
    assert faults.leaked_bytes == 10 * 64 * 1024
    faults.reset()
    assert faults.leaked_bytes == 0
    assert faults.state.leak_kb_per_request == 0


# -- through the admin endpoint, against the real app -----------------------------------


def _set(demo: Any, **switches: Any) -> dict[str, Any]:
    with demo.client() as admin:
        response = admin.post("/api/admin/faults", json=switches)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"timeout_ms": "soon"}, "timeout_ms"),
        ({"polling_runaway": 1}, "polling_runaway"),
        ({"routes": ["/nope"]}, "routes"),
        ({"leak": 1}, "leak"),
        ([1], "body"),
    ],
)
def test_admin_refuses_bad_values_with_a_400_naming_the_field(
    demo: Any, body: Any, field: str
) -> None:
    with demo.client() as admin:
        response = admin.post("/api/admin/faults", json=body)
        assert response.status_code == 400
        assert response.json()["field"] == field
        assert admin.get("/api/admin/faults").json()["error_rate"] == 0


@pytest.mark.slow
def test_admin_reads_sets_and_resets(demo: Any) -> None:
    state = _set(demo, slow_db_ms=1, polling_runaway=True)
    assert state["slow_db_ms"] == 1
    assert state["polling_runaway"] is True
    with demo.client() as admin:
        assert admin.get("/api/admin/faults").json() == state
        assert admin.get("/api/health").json()["faults"] == {
            "slow_db_ms": 1,
            "polling_runaway": True,
        }
        assert admin.delete("/api/admin/faults").json()["polling_runaway"] is False


@pytest.mark.slow
def test_slow_db_adds_at_least_its_delay(demo: Any) -> None:
    with demo.guest() as client:
        _set(demo, slow_db_ms=250)
        response = client.get("/api/cards")
        assert response.status_code == 200
        # Two DB calls (session, cards), each delayed: a lower bound, never flaky.
        assert response.elapsed.total_seconds() >= 0.5
        _set(demo, slow_db_ms=0)


@pytest.mark.slow
def test_error_rate_gives_500s_at_about_that_rate(demo: Any) -> None:
    with demo.guest() as client:
        _set(demo, error_rate=0.5)
        statuses = [client.get("/api/cards").status_code for _ in range(200)]
        assert set(statuses) <= {200, 500}
        # 200 draws at p=0.5: 100 ± 7; the bounds are > 5 standard deviations out.
        assert 60 <= statuses.count(500) <= 140
        _set(demo, error_rate=1.0)
        failed = client.get("/api/poll")
        assert failed.status_code == 500
        assert failed.json()["fault"] == "error_rate"
        assert client.get("/api/health").status_code == 200  # health and admin are spared
        with demo.client() as admin:
            assert admin.get("/api/admin/faults").status_code == 200


@pytest.mark.slow
def test_faults_can_target_one_route(demo: Any) -> None:
    with demo.guest() as client:
        _set(demo, error_rate=1.0, routes=["/api/poll"])
        assert client.get("/api/poll").status_code == 500
        assert client.get("/api/cards").status_code == 200


@pytest.mark.slow
def test_slow_db_can_target_one_route(demo: Any) -> None:
    def db_ms(response: httpx.Response) -> float:
        spans = dict(
            part.strip().split(";dur=", 1)
            for part in response.headers["server-timing"].split(",")
            if ";dur=" in part
        )
        return float(spans["db"])

    with demo.guest() as client:
        _set(demo, slow_db_ms=200, routes=["/api/cards"])
        try:
            slowed = client.get("/api/cards")
            spared = client.get("/api/conversations")
        finally:
            _set(demo, slow_db_ms=0, routes=[])
        assert (slowed.status_code, spared.status_code) == (200, 200)
        assert db_ms(slowed) >= 200
        assert db_ms(spared) < 200


def test_slow_db_outside_requests_follows_the_scope() -> None:
    faults = Faults(known_routes={"/api/cards"})
    faults.update({"slow_db_ms": 30})
    assert faults.db_delay_ms() == 30  # unscoped: every call
    token = faults.serving("")
    assert faults.db_delay_ms() == 0  # admin and health are spared
    faults.served(token)
    faults.update({"routes": ["/api/cards"]})
    assert faults.db_delay_ms() == 0  # scoped: calls outside a request are spared
    token = faults.serving("/api/cards")
    assert faults.db_delay_ms() == 30
    faults.served(token)


@pytest.mark.slow
def test_leak_grows_the_app_rss(demo: Any) -> None:
    process = psutil.Process(demo.pid)
    with demo.guest() as client:
        before = process.memory_info().rss
        _set(demo, leak_kb_per_request=1024)
        for _ in range(60):
            assert client.get("/api/health").status_code == 200  # spared: no leak
        for _ in range(60):
            assert client.get("/api/presence").status_code == 200
        grown = process.memory_info().rss - before
        with demo.client() as admin:
            state = admin.get("/api/admin/faults").json()
            assert state["leaked_bytes"] == 60 * 1024 * 1024
            assert grown >= 50 * 1024 * 1024
            assert admin.delete("/api/admin/faults").json()["leaked_bytes"] == 0


@pytest.mark.slow
def test_runaway_flag_rides_on_the_poll_answer(demo: Any) -> None:
    with demo.guest() as client:
        assert client.get("/api/poll").json()["runaway"] is False
        _set(demo, polling_runaway=True)
        assert client.get("/api/poll").json()["runaway"] is True
        _set(demo, polling_runaway=False)
        assert client.get("/api/poll").json()["runaway"] is False


@pytest.mark.slow
def test_timeout_makes_handlers_hang(demo: Any) -> None:
    with demo.guest() as client:
        _set(demo, timeout_ms=400)
        slow = client.get("/api/cards")
        assert slow.status_code == 200
        assert slow.elapsed.total_seconds() >= 0.4
        with pytest.raises(httpx.ReadTimeout):
            client.get("/api/cards", timeout=0.1)
        _set(demo, timeout_ms=0)
