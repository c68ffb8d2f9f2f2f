"""The harness itself: a real lab runs a notebook's cells and renders an anywidget."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

CELLS = [
    "import perfnb, anywidget, traitlets\nprint('kernel ok', perfnb.SCHEMA_VERSION)",
    (
        "class Hello(anywidget.AnyWidget):\n"
        '    _esm = "export default { render({ model, el }) {'
        " el.innerHTML = '<b class=\\\"hello-widget\\\">' + model.get('text') + '</b>'; } }\"\n"
        "    text = traitlets.Unicode('hello from the kernel').tag(sync=True)\n"
        "Hello()"
    ),
]


def _write(root: Path, name: str, sources: list[str]) -> str:
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, root / name)
    return name


def test_lab_runs_every_cell_and_renders_an_anywidget(lab_page, lab_root: Path) -> None:
    name = _write(lab_root, "harness.ipynb", CELLS)
    lab_page.open(name)
    lab_page.run_all()
    assert lab_page.executed_count() == len(CELLS)
    assert lab_page.error_outputs() == []
    text = lab_page.outputs()[0][0]["text"]
    assert "kernel ok 1" in text
    lab_page.page.wait_for_selector(".hello-widget", timeout=30_000)
    assert lab_page.page.inner_text(".hello-widget") == "hello from the kernel"
    shot = lab_page.screenshot("rendered")
    assert shot.stat().st_size > 0
    assert lab_page.console_errors == []


def test_a_failing_cell_is_reported_as_an_error_output(lab_page, lab_root: Path) -> None:
    name = _write(lab_root, "harness_fail.ipynb", ["raise ValueError('on purpose')"])
    lab_page.open(name)
    lab_page.run_cell(0)
    assert lab_page.error_outputs() == ["cell 0: ValueError: on purpose"]
