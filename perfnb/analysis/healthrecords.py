"""The health engine's vocabulary and records: states, alerts, and records from frames.

Health transitions are ``kind="health"`` records (``name`` the state, ``value``
its level with 0 the best, ``unit`` ``"state"``, ``tags`` ``{state, previous,
reason}``); alerts are ``kind="alert"`` records (``name`` the alert, ``route``,
``client``, ``value``/``unit`` the figure that tripped it, ``tags`` ``{state:
raised | cleared, severity, reason, level, message}``; ``level`` and ``message``
are what the dashboard's alert list shows). Both have ``source="perfnb"``.

>>> alert_record(now=0.0, name="timeout", state="raised", value=0.5,
...              reason="5 of 10 requests timed out", route="/api/cards")["tags"]["message"]
'timeout raised on /api/cards: 5 of 10 requests timed out'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

from perfnb.schema import Record

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ALERTS",
    "SEVERITY",
    "STATES",
    "OpenAlerts",
    "alert_record",
    "health_record",
    "records_of",
]

#: The health states and their values, best first.
STATES: Final[dict[str, tuple[str, ...]]] = {
    "apiPolling": ("healthy", "degraded", "failing"),
    "serverResponse": ("good", "slow", "timeout"),
    "clientPerformance": ("optimal", "degraded", "poor"),
}
#: The alerts the engine raises, and how serious each is when raised.
SEVERITY: Final = {
    "runaway": "critical",
    "degradation": "warning",
    "error_rate": "critical",
    "timeout": "critical",
    "leak": "warning",
}
ALERTS: Final = tuple(SEVERITY)
_UNIT: Final = {
    "runaway": "s",
    "degradation": "ms",
    "error_rate": "ratio",
    "timeout": "ratio",
    "leak": "bytes/s",
}


def _base(now: float, kind: str, name: str, service: str | None) -> Record:
    record: Record = {
        "time": datetime.fromtimestamp(now, UTC),
        "source": "perfnb",
        "kind": kind,
        "name": name,
    }
    if service:
        record["service"] = service
    return record


def health_record(
    *,
    now: float,
    name: str,
    state: str,
    previous: str,
    reason: str,
    service: str | None = None,
) -> Record:
    """A health transition of ``name`` to ``state`` at ``now`` (epoch s).

    >>> health_record(now=0.0, name="apiPolling", state="degraded", previous="healthy",
    ...               reason="12% of 40 polls failed")["value"]
    1.0
    """
    record = _base(now, "health", name, service)
    record["value"] = float(STATES[name].index(state))
    record["unit"] = "state"
    record["tags"] = {"state": state, "previous": previous, "reason": reason[:256]}
    return record


def alert_record(
    *,
    now: float,
    name: str,
    state: str,
    value: float,
    reason: str,
    route: str | None = None,
    client: str | None = None,
    service: str | None = None,
) -> Record:
    """An alert ``name`` raised or cleared (``state``) at ``now``; NaN ``value`` is left out."""
    severity = SEVERITY[name] if state == "raised" else "info"
    record = _base(now, "alert", name, service)
    if route:
        record["route"] = route
    if client:
        record["client"] = client
    if math.isfinite(value):
        record["value"] = float(value)
        record["unit"] = _UNIT[name]
    where = f" on {route}" if route else ""
    record["tags"] = {
        "state": state,
        "severity": severity,
        "reason": reason[:256],
        "level": severity,
        "message": f"{name} {state}{where}: {reason}"[:256],
    }
    return record


class OpenAlerts:
    """The alerts raised and not cleared yet, by key; raising or clearing makes its record.

    A key (the alert's name first, then what it is about) is raised once until it
    is cleared; clearing a key that is not open does nothing.

    >>> book = OpenAlerts()
    >>> key = ("timeout", "/a", "")
    >>> book.raise_(key, 0.0, 0.5, "5 of 10 timed out", route="/a")["tags"]["state"]
    'raised'
    >>> book.raise_(key, 1.0, 0.5, "again") is None, len(book.records)
    (True, 1)
    >>> book.clear(key, 2.0, 0.0, "0 of 10")["route"], book.records
    ('/a', [])
    """

    def __init__(self, *, service: str | None = None) -> None:
        self.service = service
        self._open: dict[tuple[str, str, str], Record] = {}

    @property
    def records(self) -> list[Record]:
        """The ``raised`` records of the open alerts, oldest first."""
        return list(self._open.values())

    def raise_(
        self,
        key: tuple[str, str, str],
        now: float,
        value: float,
        reason: str,
        *,
        route: str | None = None,
        client: str | None = None,
    ) -> Record | None:
        """The ``raised`` record, or ``None`` when ``key`` is open already."""
        if key in self._open:
            return None
        record = alert_record(
            now=now,
            name=key[0],
            state="raised",
            value=value,
            reason=reason,
            route=route,
            client=client,
            service=self.service,
        )
        self._open[key] = record
        return record

    def clear(
        self, key: tuple[str, str, str], now: float, value: float, reason: str
    ) -> Record | None:
        """The ``cleared`` record (same route and client as raised), or ``None``."""
        raised = self._open.pop(key, None)
        if raised is None:
            return None
        return alert_record(
            now=now,
            name=key[0],
            state="cleared",
            value=value,
            reason=reason,
            route=raised.get("route"),
            client=raised.get("client"),
            service=self.service,
        )


def records_of(data: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[Record]:
    """Records sorted by time, from a frame of the schema's columns or from dicts.

    Nulls (``None``, NaN, ``pd.NA``) are left out, pandas and numpy scalars become
    Python values; rows without a time are skipped.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"time": [pd.Timestamp("2026-01-01", tz="UTC")],
    ...                       "source": ["server"], "kind": ["http"], "status": [None]})
    >>> records_of(frame)[0]["time"].year, "status" in records_of(frame)[0]
    (2026, False)
    """
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return _frame_records(cast("pd.DataFrame", data))
    out = [r for r in data if isinstance(r.get("time"), datetime)]  # dicts: already plain
    out.sort(key=lambda r: r["time"])
    return out  # type: ignore[return-value]


def _frame_records(frame: pd.DataFrame) -> list[Record]:
    # Column by column: nulls to None and numpy/pandas scalars to Python values once
    # per column, not per cell.
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        column = frame[name]
        if name == "time":
            values = [None if v is None else v.to_pydatetime() for v in column.tolist()]
        else:
            mask = column.isna().tolist()
            values = [None if m else v for v, m in zip(column.tolist(), mask, strict=True)]
        columns[str(name)] = values
    names = list(columns)
    out: list[Record] = []
    for row in zip(*columns.values(), strict=True):
        record = {k: v for k, v in zip(names, row, strict=True) if v is not None}
        if isinstance(record.get("time"), datetime):
            out.append(record)  # type: ignore[arg-type]
    out.sort(key=lambda r: r["time"])
    return out
