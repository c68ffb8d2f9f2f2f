"""The one exception tree of perfnb.

Every error perfnb raises on purpose is a :class:`PerfnbError`, so callers can
catch perfnb's failures without catching their own bugs. Messages name what was
wrong, show the value, and say what is accepted instead.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PerfnbError",
    "PerfnbWarning",
    "RecordError",
    "SafetyError",
    "StoreError",
    "TargetError",
]


class PerfnbError(Exception):
    """Base class of every error perfnb raises on purpose."""


class RecordError(PerfnbError, ValueError):
    """A record does not fit the record schema (unknown column, wrong type, naive time)."""


class StoreError(PerfnbError):
    """The store cannot read or write what was asked."""


class ConfigError(PerfnbError, ValueError):
    """A configuration (file, argument, JSON document) has a wrong or unknown field."""


class TargetError(PerfnbError):
    """A load target is refused (not on the allow-list) or unreachable."""


class SafetyError(PerfnbError):
    """A safety limit stopped a load run."""


class PerfnbWarning(UserWarning):
    """Something perfnb recovered from but the user should know about."""
