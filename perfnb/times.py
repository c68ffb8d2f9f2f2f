"""Time ranges as people write them: aware datetimes, dates, or ISO 8601 text, made UTC.

Every part that takes a ``start``/``end`` (the store's reads, baselines, the
health replay, the report and their commands) reads it through :func:`to_utc`,
so they accept the same forms and refuse bad ones with the same message.

>>> to_utc("2026-11-28", name="start")
datetime.datetime(2026, 11, 28, 0, 0, tzinfo=datetime.timezone.utc)
>>> to_utc("2026-11-28T09:30", name="--from", assume_utc=True).hour
9
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from perfnb.errors import ConfigError, PerfnbError

__all__ = ["TimeLike", "to_utc"]

TimeLike = datetime | date | str | None


def to_utc(
    value: TimeLike,
    *,
    name: str,
    assume_utc: bool = False,
    error: type[PerfnbError] = ConfigError,
) -> datetime | None:
    """``value`` as an aware UTC datetime; a date is its midnight UTC; ``None`` stays.

    Text is ISO 8601 (``Z`` allowed); with ``assume_utc`` (command-line
    arguments) text without an offset means UTC, otherwise it is refused like a
    naive datetime. Errors are ``error`` (a :class:`~perfnb.errors.PerfnbError`)
    naming the argument ``name``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:  # a bare date means its midnight UTC
                value = date.fromisoformat(text)
            else:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            offset = "no offset means UTC" if assume_utc else "with an offset"
            raise error(
                f"{name}: got {text!r}; expected an ISO 8601 date or time "
                f"(2026-11-28 or 2026-11-28T09:30:00Z; {offset})"
            ) from None
        if assume_utc and isinstance(value, datetime) and value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise error(f"{name}: got naive {value!r}; give a timezone (UTC)")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise error(
        f"{name}: got {value!r} ({type(value).__name__}); expected a datetime, a date "
        "or an ISO 8601 string"
    )
