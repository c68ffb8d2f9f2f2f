"""The public surface of perfnb is curated: this test pins it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import perfnb

EXPECTED = [
    "SCHEMA_VERSION",
    "ConfigError",
    "ExportResult",
    "FeedConnection",
    "FeedGroup",
    "HealthConfig",
    "HealthEngine",
    "Histogram",
    "LatencySketch",
    "LoadRun",
    "Monitor",
    "PerfnbError",
    "PerfnbMiddleware",
    "PerfnbWSGIMiddleware",
    "PerfnbWarning",
    "Record",
    "RecordError",
    "RunResult",
    "SafetyError",
    "Sink",
    "Store",
    "StoreError",
    "StoreWriter",
    "Stream",
    "Subscription",
    "TargetError",
    "Watcher",
    "build_report",
    "connect",
    "find_capacity",
    "instrument",
    "measure_impact",
    "read_export",
    "read_har",
    "run_load",
    "run_single_user",
    "timing",
    "uninstrument",
    "validate_record",
    "watch",
]


def test_all_is_sorted_and_pinned() -> None:
    assert perfnb.__all__ == EXPECTED
    assert sorted(perfnb.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n)) == EXPECTED


def test_every_exported_name_resolves() -> None:
    for name in perfnb.__all__:
        assert getattr(perfnb, name) is not None, name


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="does_not_exist"):
        perfnb.does_not_exist  # type: ignore[attr-defined]  # noqa: B018


def test_import_perfnb_is_light() -> None:
    heavy = "('pandas', 'pyarrow', 'duckdb', 'httpx')"
    code = f"import sys, perfnb; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
