"""Fixtures of the browser beacon tests: real headless Chromium against the demo app.

- ``browser``: one headless Debian Chromium per module, driven by Playwright
  (never Playwright's own browser downloads);
- ``serve_demo``: :func:`beacon_support.serve_app`;
- ``open_page``: a fresh page (own context, empty cache) that logs its requests
  and console errors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from beacon_support import PageLog, Served, is_benign, serve_app
from chromium import launch

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def serve_demo() -> Callable[..., contextlib.AbstractContextManager[Served]]:
    return serve_app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as chromium:
        yield chromium


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[], tuple[Any, PageLog]]]:
    contexts: list[Any] = []

    def make() -> tuple[Any, PageLog]:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        log = PageLog()
        page.on(
            "request",
            lambda r: log.requests.append(
                (r.method, r.url, r.headers.get("x-perfnb-beacon"), r.resource_type)
            ),
        )
        page.on(
            "console",
            lambda m: m.type == "error" and not is_benign(m) and log.errors.append(m.text),
        )
        page.on("pageerror", lambda e: log.errors.append(f"pageerror: {e}"))
        page.on(
            "response",
            lambda r: (
                (value := r.headers.get("x-perfnb-control"))
                and log.controls.append(json.loads(value))
            ),
        )
        return page, log

    yield make
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()
