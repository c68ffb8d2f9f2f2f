"""The examples in the health modules' docstrings run and say what they show."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from perfnb.analysis import (
    health,
    healthconfig,
    healthrecords,
    healthstates,
    hysteresis,
    leaks,
    routehealth,
    runaway,
    watch,
)
from perfnb.widgets import lights, livehealth

MODULES = [
    health,
    healthconfig,
    healthrecords,
    healthstates,
    hysteresis,
    leaks,
    routehealth,
    runaway,
    watch,
]


@pytest.mark.parametrize("module", [*MODULES, lights, livehealth], ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
