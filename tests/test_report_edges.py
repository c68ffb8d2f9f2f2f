"""The post-mortem report at its edges: a range with nothing in it, a notebook that fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from report_support import fill

pytestmark = pytest.mark.slow


def run_report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perfnb.report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edges") / "store"
    fill(root, minutes=2, per_minute=100)
    return {"root": root}


def test_empty_range_without_baseline_still_makes_a_report(
    story: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "empty.html"
    done = run_report(
        "--store", story["root"], "--from", "2026-03-05", "--to", "2026-03-06", "--out", out
    )
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    assert "no health transitions, alerts or load runs in this range" in html
    assert 'data-chart="timeline"' in html
    assert 'data-chart="baseline"' not in html
    assert "No baseline given" in html


def test_a_failing_notebook_exits_1_and_keeps_it_for_a_look(
    story: dict[str, Path], tmp_path: Path
) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("STORE = START = END = BASELINE = PNG_DIR = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('the notebook broke')")]
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "r.html"
    done = run_report(
        "--store", story["root"], "--from", "2026-03-02", "--to", "2026-03-03",
        "--out", out, "--notebook", path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "RuntimeError: the notebook broke" in done.stderr
    assert not out.exists()
    kept = nbformat.read(tmp_path / "r.html.failed.ipynb", as_version=4)
    assert kept.cells[1].metadata["tags"] == ["injected-parameters"]
