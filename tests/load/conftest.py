"""Fixtures of the load tests: the target app of ``load_target`` on a real uvicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from load_target import TargetApp, served


@pytest.fixture
def target() -> Iterator[TargetApp]:
    """The target app served on uvicorn in a background thread."""
    with served(TargetApp()) as app:
        yield app
