"""Collectors that run beside the code being measured: Server-Timing, httpx hooks.

>>> from perfnb.collect import parse_server_timing
>>> parse_server_timing("db;dur=2")[0].dur
2.0
"""

from __future__ import annotations

from perfnb.collect.servertiming import (
    ServerTimingMetric,
    format_server_timing,
    parse_server_timing,
)

__all__ = ["ServerTimingMetric", "format_server_timing", "parse_server_timing"]
