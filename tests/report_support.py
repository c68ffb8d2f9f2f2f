"""A store with a known story for the report tests: real traffic with an error burst,
a load run seen by the server and by the load engine, health transitions and alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from perfnb.store import Store

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ROUTES = np.array(["/api/cards/{card_id}", "/api/search", "/api/poll", "/", "/api/checkout"])
BASE_MS = np.array([5.0, 40.0, 2.0, 8.0, 60.0])
RUN_ID = "stress-1"


def fill(
    root: str | Path,
    *,
    start: datetime = T0,
    minutes: int = 10,
    per_minute: int = 600,
    slow: float = 1.0,
    seed: int = 0,
    marks: bool = True,
) -> Store:
    """Write ``minutes`` of synthetic records from ``start`` into the store at ``root``.

    Half way through, 40 s in which 40% of requests fail (and the health and alert
    records that saw it); two minutes in, a 30 s load run.
    """
    rng = np.random.default_rng(seed)
    store = Store(root)
    n = minutes * per_minute
    origin = pd.Timestamp(start)
    pick = rng.integers(0, len(ROUTES), n)
    times = origin + pd.to_timedelta(np.sort(rng.uniform(0, minutes * 60, n)), unit="s")
    durations = BASE_MS[pick] * rng.lognormal(0, 0.4, n) * slow
    half = origin + pd.Timedelta(seconds=minutes * 30)
    burst = (times >= half) & (times < half + pd.Timedelta(seconds=40))
    status = np.where(burst & (rng.random(n) < 0.4), 500, 200).astype("int16")
    store.append(
        pd.DataFrame(
            {
                "time": times,
                "source": "server",
                "kind": "http",
                "route": ROUTES[pick],
                "method": "GET",
                "status": status,
                "duration_ms": durations.round(3),
                "server_ms": durations.round(3),
                "db_ms": (durations * 0.3).round(3),
            }
        )
    )
    m = 2000
    run_times = (
        origin + pd.Timedelta(minutes=2) + pd.to_timedelta(np.sort(rng.uniform(0, 30, m)), "s")
    )
    run_pick = rng.integers(0, 2, m)
    server_ms = BASE_MS[run_pick] * rng.lognormal(0, 0.3, m) * 1.5
    for source, network_ms in (("server", 0.0), ("load", 1.5)):
        store.append(
            pd.DataFrame(
                {
                    "time": run_times,
                    "source": source,
                    "kind": "http",
                    "route": ROUTES[run_pick],
                    "method": "GET",
                    "status": np.full(m, 200, "int16"),
                    "duration_ms": (server_ms + network_ms * rng.random(m)).round(3),
                    "server_ms": server_ms.round(3),
                    "db_ms": (server_ms * 0.3).round(3),
                    "run_id": RUN_ID,
                }
            )
        )
    if marks:
        store.append(health_and_alerts(half.to_pydatetime()))
    return store


def health_and_alerts(at: datetime) -> list[dict[str, object]]:
    def rec(seconds: int, kind: str, name: str, **tags: str) -> dict[str, object]:
        moment = at + timedelta(seconds=seconds)
        return {"time": moment, "source": "perfnb", "kind": kind, "name": name, "tags": tags}

    return [
        rec(10, "health", "apiPolling", state="degraded", previous="healthy", reason="12% failed"),
        rec(60, "health", "apiPolling", state="healthy", previous="degraded", reason="0% failed"),
        rec(12, "health", "serverResponse", state="slow", previous="good", reason="p95 612 ms"),
        rec(15, "alert", "error_rate", severity="critical", state="raised", reason="40% errors"),
        rec(70, "alert", "error_rate", severity="critical", state="cleared", reason="back to 0%"),
    ]
