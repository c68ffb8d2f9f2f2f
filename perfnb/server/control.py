"""The monitor's control state and limits: what is recorded, and bounds on the feed.

:class:`Control` is what ``GET/POST <prefix>/control`` reads and sets (on or
off, which kinds, a sampling ratio); :class:`FeedLimits` bounds what the feed
and the intake do. The ``check_*`` functions refuse bad control values with a
:class:`~perfnb.errors.ConfigError` naming the field, whether they come from
Python or from JSON.

>>> Control(kinds=frozenset({"http"})).as_json()
{'enabled': True, 'kinds': ['http'], 'sample': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from perfnb.errors import ConfigError
from perfnb.schema import KINDS

__all__ = [
    "UNSET",
    "Control",
    "FeedLimits",
    "UnsetType",
    "check_enabled",
    "check_kinds",
    "check_sample",
]


@dataclass(frozen=True, slots=True)
class Control:
    """What the monitor records: on or off, which kinds (``None``: all), a sampling ratio.

    >>> Control().sample
    1.0
    """

    enabled: bool = True
    kinds: frozenset[str] | None = None
    sample: float = 1.0

    def as_json(self) -> dict[str, object]:
        """The wire form answered by ``GET/POST <prefix>/control``."""
        kinds = None if self.kinds is None else sorted(self.kinds)
        return {"enabled": self.enabled, "kinds": kinds, "sample": self.sample}


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Bounds on what the feed and the intake do.

    >>> FeedLimits().batch_records
    1000
    """

    #: Most records in one SSE ``records`` event.
    batch_records: int = 1000
    #: Seconds between keep-alive comments on an idle stream.
    keepalive_seconds: float = 15.0
    #: A stream ends after this long and the client resumes with ``Last-Event-ID``;
    #: this bounds how long a graceful server shutdown waits for open streams (a
    #: server such as uvicorn waits for open responses before it tells the app it
    #: stops, so the stream cannot end on the shutdown itself).
    stream_seconds: float = 5.0
    #: After a wake-up the stream waits this long so records go out in batches.
    linger_seconds: float = 0.05
    #: Largest ``POST <prefix>/control`` body.
    control_bytes: int = 16 * 1024
    #: Records the snapshot looks at, newest first.
    snapshot_scan: int = 50_000

    def __post_init__(self) -> None:
        for name in (
            "batch_records",
            "keepalive_seconds",
            "stream_seconds",
            "control_bytes",
            "snapshot_scan",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                msg = f"FeedLimits.{name}: got {value!r}; expected a positive number"
                raise ConfigError(msg)
        linger = self.linger_seconds
        if isinstance(linger, bool) or not isinstance(linger, int | float) or linger < 0:
            msg = f"FeedLimits.linger_seconds: got {linger!r}; expected seconds ≥ 0"
            raise ConfigError(msg)


class UnsetType:
    """The type of :data:`UNSET`: an argument left out, where ``None`` has a meaning."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: An argument left out (``kinds=None`` means every kind, so None cannot say it).
UNSET: Final = UnsetType()


def check_enabled(value: object) -> None:
    # Values come from JSON too, so the annotation is no guarantee.
    if value is not None and not isinstance(value, bool):
        msg = f"enabled: got {value!r}; expected true or false"
        raise ConfigError(msg)


def check_kinds(kinds: Iterable[str] | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str) or not isinstance(kinds, Iterable):
        msg = f"kinds: got {kinds!r}; expected a list of kinds or null for all"
        raise ConfigError(msg)
    chosen = list(kinds)
    for kind in chosen:
        if kind not in KINDS:
            msg = f"kinds: got {kind!r}; expected kinds from {sorted(KINDS)}"
            raise ConfigError(msg)
    return frozenset(chosen)


def check_sample(sample: object) -> None:
    """Refuse a sampling ratio outside [0, 1] (None: unchanged)."""
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1
    ):
        msg = f"sample: got {sample!r}; expected a number between 0 and 1"
        raise ConfigError(msg)
