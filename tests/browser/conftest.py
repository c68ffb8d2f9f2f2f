"""A real JupyterLab on 127.0.0.1, driven by Playwright in headless Debian chromium.

Fixtures:

- ``lab``: one JupyterLab per session, token-protected, isolated Jupyter dirs,
  serving a temporary root that holds copies of ``notebooks/`` (tests may add more).
- ``chromium``: one headless browser per session (``/usr/bin/chromium``).
- ``lab_page``: a fresh browser page wrapped in :class:`LabPage`, which opens a
  notebook, runs its cells, waits for the kernel to go idle, collects console
  errors, and saves screenshots under ``artifacts/browser/``.

Playwright's own browser downloads are never used: the Debian package is.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

from chromium import launch  # noqa: E402

from perfnb.widgets.apps import DemoApp  # noqa: E402
from perfnb.widgets.lab import LabServer, copy_notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"

# Console messages that JupyterLab itself prints on a fresh, offline, isolated
# server and that say nothing about perfnb; anything else counts as an error.
BENIGN_CONSOLE = (
    re.compile(r"Failed to load resource: the server responded with a status of 404"),
    re.compile(r"Failed to fetch ipywidgets through the \"jupyter.widget.control\" comm"),
)


def _wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab-root")
    copy_notebooks(root)
    return root


@pytest.fixture(scope="session")
def demo_app() -> Iterator[DemoApp]:
    """One demo app for the session; the lab's notebooks connect to it."""
    with DemoApp.start() as app:
        yield app


@pytest.fixture(scope="session")
def lab(
    lab_root: Path, demo_app: DemoApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {
        "PERFNB_DEMO_URL": demo_app.url,
        "PERFNB_STORE": str(tmp_path_factory.mktemp("store")),
        "PERFNB_EXPORTS": str(tmp_path_factory.mktemp("exports")),
    }
    server = LabServer(
        root=lab_root,
        isolated=True,
        expose_app=True,
        env=env,
        log_path=ARTIFACTS / "jupyterlab.log",
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch() as browser:
        yield browser


class LabPage:
    """One browser page on the lab, with helpers to run a notebook like a user."""

    def __init__(self, page: Any, lab: LabServer, name: str) -> None:
        self.page = page
        self.lab = lab
        self.name = name
        self.console: list[str] = []
        self.console_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg: Any) -> None:
        text = f"{msg.type}: {msg.text}"
        self.console.append(text)
        if msg.type == "error" and not any(p.search(msg.text) for p in BENIGN_CONSOLE):
            self.console_errors.append(text)

    # -- notebook driving -------------------------------------------------------------
    def open(self, notebook: str, *, timeout: float = 60.0) -> None:
        """Open ``notebook`` and wait until its kernel is idle."""
        # `reset`: a fresh workspace, so notebooks that earlier tests left open (with
        # widget outputs of kernels long gone) are not restored beside this one
        self.page.goto(self.lab.url(notebook) + "&reset")
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext"
            " && window.jupyterapp.shell.currentWidget.sessionContext.session",
            timeout=timeout * 1000,
        )
        self.wait_idle(timeout=timeout)

    def _eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def kernel_status(self) -> str:
        status: str = self._eval(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k ? k.status : 'none'; }"
        )
        return status

    def cells_pending(self) -> int:
        """Code cells queued or running (their prompt shows ``[*]``)."""
        pending: int = self._eval(
            "() => Array.from(document.querySelectorAll("
            "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt'))"
            ".filter(p => p.textContent.includes('*')).length"
        )
        return pending

    def wait_idle(self, *, timeout: float = 120.0) -> None:
        """Wait until no cell is pending and the kernel is idle, twice in a row."""
        stable = 0

        def settled() -> bool:
            nonlocal stable
            ok = self.kernel_status() == "idle" and self.cells_pending() == 0
            stable = stable + 1 if ok else 0
            return stable >= 3

        _wait_for(settled, timeout=timeout, what=f"{self.name}: idle kernel")

    def command(self, name: str, args: dict[str, Any] | None = None) -> None:
        self._eval(
            "([name, args]) => window.jupyterapp.commands.execute(name, args)", [name, args or {}]
        )

    def run_all(self, *, timeout: float = 180.0) -> None:
        """Run every cell (Run > Run All Cells) and wait for the kernel to settle."""
        self.command("notebook:run-all-cells")
        _wait_for(
            lambda: self.cells_pending() > 0 or self.executed_count() > 0,
            timeout=30,
            what="cells to start",
        )
        self.wait_idle(timeout=timeout)

    def cell_count(self) -> int:
        count: int = self._eval(
            "() => window.jupyterapp.shell.currentWidget.content.widgets.length"
        )
        return count

    def run_cell(self, index: int, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Run one cell, as a user selecting it and pressing Shift-Enter would."""
        self._eval(
            "(i) => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", index
        )
        self.command("notebook:run-cell")
        if wait:
            _wait_for(
                lambda: self.execution_count(index) is not None and self.cells_pending() == 0,
                timeout=timeout,
                what=f"cell {index} to run",
            )

    def execution_count(self, index: int) -> int | None:
        count: int | None = self._eval(
            "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.executionCount",
            index,
        )
        return count

    def executed_count(self) -> int:
        count: int = self._eval(
            "() => window.jupyterapp.shell.currentWidget.content.widgets"
            ".filter(c => c.model.type === 'code' && c.model.executionCount !== null).length"
        )
        return count

    def outputs(self) -> list[list[dict[str, Any]]]:
        """Every cell's outputs as nbformat JSON."""
        raw: str = self._eval(
            "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets"
            ".map(c => c.model.type === 'code' ? c.model.outputs.toJSON() : []))"
        )
        out: list[list[dict[str, Any]]] = json.loads(raw)
        return out

    def error_outputs(self) -> list[str]:
        """Tracebacks shown in the notebook (``error`` outputs), as text."""
        errors = []
        for index, cell in enumerate(self.outputs()):
            for out in cell:
                if out.get("output_type") == "error":
                    errors.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
        return errors

    def screenshot(self, label: str, *, selector: str | None = None) -> Path:
        """Save a screenshot of the page (or of ``selector``'s last match) in ``artifacts/``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}-{label}")
        path = ARTIFACTS / f"{safe}.png"
        if selector is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            target = self.page.locator(selector).last
            target.scroll_into_view_if_needed()
            target.screenshot(path=str(path))
        return path

    def shutdown_kernel(self) -> None:
        """Shut the notebook's kernel down (stopping anything it left running)."""
        self._eval(
            "async () => { const w = window.jupyterapp.shell.currentWidget;"
            " if (w && w.sessionContext.session) { await w.sessionContext.shutdown(); } }"
        )


@pytest.fixture
def lab_page(chromium: Any, lab: LabServer, request: pytest.FixtureRequest) -> Iterator[LabPage]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    helper = LabPage(page, lab, request.node.name)
    try:
        yield helper
    finally:
        if request.node.stash.get(_FAILED, False):
            # the page may already be gone; the failure says why
            with contextlib.suppress(Exception):
                helper.screenshot("on-failure")
        # best effort: the server's shutdown stops kernels anyway
        with contextlib.suppress(Exception):
            helper.shutdown_kernel()
        context.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report
