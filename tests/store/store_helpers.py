"""Records shared by the store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def http(i: int, *, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A server-side HTTP record, numbered by ``request_bytes``."""
    record: dict[str, Any] = {
        "time": at or T0 + timedelta(milliseconds=i),
        "source": "server",
        "kind": "http",
        "service": "shop",
        "route": f"/api/items/{{item_id}}/{i % 3}",
        "method": "GET",
        "status": 200,
        "duration_ms": 1.5 + i % 7,
        "request_bytes": i,
    }
    record.update(extra)
    return record
