"""Every shipped notebook runs top to bottom, unedited, headless under nbclient.

Each runs in a temporary copy with its own store; afterwards the test checks that the
notebook froze its charts (HTML with plotly.js and the data, plus a PNG) and stopped
what it started (an extra cell, appended here, asks the kernel).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# appended to the notebooks that start a demo app: is it really gone?
CHECK_STOPPED = """
import urllib.request, urllib.error
try:
    urllib.request.urlopen(app.url + "/api/health", timeout=2)
    still_up = True
except (urllib.error.URLError, OSError):
    still_up = False
print("still up:", still_up and app.started_here)
"""


def _run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    work = tmp_path / "nb"
    work.mkdir()
    shutil.copyfile(NOTEBOOKS / name, work / name)
    monkeypatch.setenv("PERFNB_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("PERFNB_EXPORTS", str(tmp_path / "exports"))
    monkeypatch.delenv("PERFNB_DEMO_URL", raising=False)  # each notebook starts its own app
    nb = nbformat.read(work / name, as_version=4)
    if "DemoApp" in "".join(c.source for c in nb.cells):
        nb.cells.append(nbformat.v4.new_code_cell(CHECK_STOPPED))
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    return nb


def _frozen_outputs(nb: nbformat.NotebookNode) -> list[dict[str, str]]:
    return [
        out["data"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "perfnb-frozen" in out.get("data", {}).get("text/html", "")
    ]


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


@pytest.mark.parametrize(
    "name",
    [
        "01_live_dashboard.ipynb",
        "02_load_test.ipynb",
        "03_post_mortem.ipynb",
        "04_retention_and_export.ipynb",
    ],
)
def test_notebook_runs_headless_freezes_and_cleans_up(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (NOTEBOOKS / name).exists():
        pytest.fail(f"{name} is missing from notebooks/")
    nb = _run(name, tmp_path, monkeypatch)
    frozen = _frozen_outputs(nb)
    assert frozen, f"{name} did not freeze its charts"
    for data in frozen:
        assert "Plotly.newPlot" in data["text/html"]
        assert data.get("image/png"), "frozen output without its PNG"
    if "DemoApp" in "".join(c.source for c in nb.cells):
        assert "still up: False" in _stdout(nb)
