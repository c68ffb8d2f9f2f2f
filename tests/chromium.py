"""Headless Debian Chromium for the browser tests, driven by Playwright.

Playwright never downloads a browser here: the tests launch ``/usr/bin/chromium``
(installed by ``make sysdeps``) with flags that keep it off the network. A
Playwright sync session keeps an event loop running on the test's thread, so each
test module opens and closes its own (``launch``); a session-wide one would break
the ``asyncio.run`` of the tests that follow it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium browser for the length of the block (skips when absent)."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (make sysdeps)")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
