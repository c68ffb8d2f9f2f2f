"""The demo front end in real headless Chromium: signs in, edits, polls smartly, runs away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chromium import launch

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any, demo: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo.url + "/")
    page.wait_for_function("window.perfnbDemo && window.perfnbDemo.state.user !== null")
    try:
        yield page
    finally:
        context.close()
    assert errors == []


def state(page: Any, name: str) -> Any:
    return page.evaluate(f"window.perfnbDemo.state.{name}")


def test_page_signs_in_and_polls(page: Any) -> None:
    assert page.inner_text("#who").startswith("guest")
    page.wait_for_function("window.perfnbDemo.state.polls >= 1", timeout=10_000)
    assert state(page, "loops") == 1
    assert state(page, "delay") == 2000
    assert "polling every 2 s" in page.inner_text("#status")


def test_cards_edited_here_and_elsewhere_show_up(page: Any, demo: Any) -> None:
    page.fill("#card-form input[name=title]", "Written in the browser")
    page.click("#card-save")
    page.wait_for_selector("#cards li:has-text('Written in the browser')")
    with demo.guest() as other:
        other.post("/api/cards", json={"title": "Written elsewhere"})
    page.wait_for_selector("#cards li:has-text('Written elsewhere')", timeout=10_000)


def test_hidden_page_backs_off_to_five_seconds(page: Any) -> None:
    page.wait_for_function("window.perfnbDemo.state.polls >= 1", timeout=10_000)
    page.evaluate(
        """() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    )
    page.wait_for_function("window.perfnbDemo.state.delay === 5000", timeout=10_000)
    page.evaluate(
        """() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => false});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    )
    page.wait_for_function("window.perfnbDemo.state.delay === 2000", timeout=10_000)


def test_runaway_flag_multiplies_poll_loops_and_recovers(page: Any, demo: Any) -> None:
    with demo.client() as admin:
        admin.post("/api/admin/faults", json={"polling_runaway": True})
        page.wait_for_function("window.perfnbDemo.state.loops >= 4", timeout=20_000)
        assert "POLLING RUNAWAY" in page.inner_text("#status")
        admin.post("/api/admin/faults", json={"polling_runaway": False})
    page.wait_for_function("window.perfnbDemo.state.loops === 1", timeout=20_000)
