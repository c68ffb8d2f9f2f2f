"""Fixtures of the store tests."""

from __future__ import annotations

from typing import Any

import pytest
from store_helpers import http


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return [http(i) for i in range(100)]
