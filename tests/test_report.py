"""The post-mortem report: ``perfnb report`` run in a subprocess over a real store, its
HTML checked for charts, hidden code and anything live or fetched; the figure builders
and the argument checks in-process."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from report_support import RUN_ID, T0, fill, health_and_alerts

import perfnb.report
from perfnb.analysis.compare import save_baseline
from perfnb.report import _strip, _with_parameters, main_report, timeline_figure

CHARTS = ["timeline", "slowest", "errors", "server_vs_network", "baseline"]
EXTERNAL = re.compile(r"<(?:script|link|img|iframe)[^>]+(?:src|href)=[\"']?(?:https?:)?//", re.I)


def run_report(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perfnb.report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with yesterday's calm ten minutes (the baseline) and today's incident."""
    root = tmp_path_factory.mktemp("report") / "store"
    fill(root, start=T0 - timedelta(days=1), slow=0.7, seed=3, marks=False)
    store = fill(root)
    yesterday = T0 - timedelta(days=1)
    save_baseline(store, "yesterday", start=yesterday, end=yesterday + timedelta(minutes=10))
    files = sorted(str(p) for p in Path(root, "events").rglob("*.parquet"))
    return {"root": root, "store": store, "files": files}


@pytest.fixture(scope="module")
def built(story: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("out")
    html, pngs = out / "sub" / "report.html", out / "png"
    done = run_report(
        "--store", story["root"], "--from", "2026-03-02T10:00:00Z", "--to", "2026-03-02T10:10",
        "--baseline", "yesterday", "--out", html, "--png", pngs,
    )  # fmt: skip
    return {"done": done, "html": html, "pngs": pngs}


@pytest.mark.slow
def test_report_command_writes_one_html_with_every_chart(built: dict[str, Any]) -> None:
    done = built["done"]
    assert done.returncode == 0, done.stderr
    assert "5 charts" in done.stdout
    assert "5 PNGs" in done.stdout
    html = built["html"].read_text(encoding="utf-8")
    found = re.findall(r"class=\"perfnb-chart\" data-chart=\"([^\"]+)\"", html)
    assert found == CHARTS
    assert html.count("Plotly.newPlot") == len(CHARTS)
    assert html.count("if (!window.Plotly)") == 1, "plotly.js should be inline exactly once"


@pytest.mark.slow
def test_report_is_static_offline_and_without_code(built: dict[str, Any]) -> None:
    html = built["html"].read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" not in html
    assert "application/vnd.jupyter.widget-view+json" not in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    # every script inline: no require.js, MathJax or widget manager to fetch
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I)
    # code cells hidden, the interactive demo left out, the parameters not shown
    assert "store.sql(" not in html
    assert "timeline_figure(" not in html
    assert "A demo session to look at" not in html
    assert "PNG_DIR" not in html
    assert "Post-mortem 2026-03-02 10:00 → 2026-03-02 10:10 UTC" in html


@pytest.mark.slow
def test_report_tells_the_story_in_the_store(built: dict[str, Any]) -> None:
    html = built["html"].read_text(encoding="utf-8")
    # the timeline: both health lanes, the alert, the load run
    for lane in (
        "health · apiPolling",
        "health · serverResponse",
        "alert · error_rate",
        f"load · {RUN_ID}",
    ):
        assert json.dumps(lane) in html  # as plotly writes it into the figure's JSON
    # the store's own health records are shown, not a replay of the detail
    assert "Timeline: health transitions, alerts and load runs" in html
    assert "health replayed from the detail" not in html
    # the burst half way (10:05:00 to 10:05:40) is found
    assert re.search(r"<strong>1 burst\(s\)</strong>", html)
    assert "2026-03-02 10:05:00" in html
    # server vs network from the load engine's records
    assert "seen by clients" in html
    # yesterday was 30% faster: regressions against the baseline
    assert re.search(r"<strong>[1-9]\d* regression\(s\)</strong> among 5 routes judged", html)


@pytest.mark.slow
def test_png_dir_gets_one_picture_per_chart(built: dict[str, Any]) -> None:
    pngs = sorted(built["pngs"].glob("*.png"))
    assert [p.stem for p in pngs] == sorted(CHARTS)
    for path in pngs:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5_000


@pytest.mark.slow
def test_report_leaves_the_store_as_it_was(story: dict[str, Any], built: dict[str, Any]) -> None:
    assert built["done"].returncode == 0
    files = sorted(str(p) for p in Path(story["root"], "events").rglob("*.parquet"))
    assert files == story["files"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-02", "--to", "2026-03-03"], "store: no perfnb store at"),
        (["--from", "last tuesday", "--to", "2026-03-03"], "start: got 'last tuesday'"),
        (["--from", "2026-03-03", "--to", "2026-03-02"], "end: got 2026-03-02T00:00:00+00:00"),
        (
            ["--from", "2026-03-02", "--to", "2026-03-03", "--baseline", "nope"],
            "baseline 'nope': not found; saved baselines: yesterday",
        ),
        (
            ["--from", "2026-03-02", "--to", "2026-03-03", "--baseline", "../x"],
            "name: got '../x'",
        ),
        (
            ["--from", "2026-03-02", "--to", "2026-03-03", "--notebook", "/no/such.ipynb"],
            "notebook: '/no/such.ipynb' is not a file",
        ),
    ],
)
def test_bad_arguments_exit_2_before_any_kernel_starts(
    story: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    store = str(tmp_path / "missing") if message.startswith("store:") else str(story["root"])
    out = tmp_path / "r.html"
    assert main_report(["--store", store, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfnb report: ")
    assert message in err
    assert not out.exists()
    assert not (tmp_path / "missing").exists(), "a mistyped store must not be created"


def test_doctests() -> None:
    assert doctest.testmod(perfnb.report).failed == 0


# -- the pieces ---------------------------------------------------------------------------


def test_parameters_go_right_after_the_tagged_cell_as_literals() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("x"), nbformat.v4.new_code_cell("A = None")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells.append(nbformat.v4.new_code_cell("print(A)"))
    source = perfnb.report._parameters(
        '/tmp/it\'s "odd"\n; import os', T0, T0 + timedelta(hours=1), None, None
    )
    _with_parameters(nb, source)
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    namespace: dict[str, Any] = {}
    exec(nb.cells[2].source, namespace)  # the values come back exactly, as data
    assert namespace["STORE"] == '/tmp/it\'s "odd"\n; import os'
    assert namespace["START"] == "2026-03-02T10:00:00+00:00"
    assert namespace["BASELINE"] is None


def test_strip_drops_demo_cells_widgets_and_stderr() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    demo = nbformat.v4.new_code_cell("demo()")
    demo.metadata["tags"] = ["demo"]
    kept = nbformat.v4.new_code_cell("show()")
    kept.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="a warning"),
        nbformat.v4.new_output("stream", name="stdout", text="kept"),
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}},
        ),
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "y"},
                "text/plain": "fallback",
            },
        ),
    ]
    nb.cells = [demo, kept]
    out = _strip(nb)
    assert "widgets" not in out.metadata
    assert len(out.cells) == 1
    outputs = out.cells[0].outputs
    assert [o.get("text") for o in outputs] == ["kept", None]
    assert dict(outputs[1]["data"]) == {"text/plain": "fallback"}


def test_timeline_lanes_colours_and_pyarrow_map_tags() -> None:
    marks = pd.DataFrame(health_and_alerts(T0.replace(minute=5)))
    # a store read hands map columns over as lists of pairs
    marks["tags"] = [list(t.items()) for t in marks["tags"]]
    runs = pd.DataFrame(
        {
            "run_id": ["r1", "r2"],
            "first": [T0, T0 + timedelta(minutes=6)],
            "last": [T0 + timedelta(minutes=1), T0 + timedelta(minutes=7)],
            "requests": [100, 50],
            "errors": [0, 3],
        }
    )
    fig = timeline_figure(marks, runs, start=T0, end=T0 + timedelta(minutes=10))
    by_name = {t["name"]: t for t in fig["data"]}
    assert set(by_name) == {
        "load run",
        "health: warn",
        "health: ok",
        "alert raised (critical)",
        "alert cleared",
    }
    assert by_name["load run"]["y"] == [
        "load · r1",
        "load · r1",
        None,
        "load · r2",
        "load · r2",
        None,
    ]
    assert by_name["health: warn"]["y"] == ["health · apiPolling", "health · serverResponse"]
    assert by_name["health: warn"]["text"][0] == "apiPolling: healthy → degraded. 12% failed"
    assert by_name["alert raised (critical)"]["marker"]["symbol"] == "triangle-up"
    assert by_name["alert cleared"]["marker"]["symbol"] == "circle-open"
    lanes = fig["layout"]["yaxis"]["categoryarray"]
    assert lanes[-1] == "load · r1"  # first lane on top
    assert len(lanes) == 5
    assert fig["layout"]["xaxis"]["range"][0].startswith("2026-03-02T10:00:00")


def test_timeline_without_anything_still_spans_the_range() -> None:
    empty = pd.DataFrame(columns=["time", "kind", "name", "tags"])
    fig = timeline_figure(empty, pd.DataFrame(), start=T0, end=T0 + timedelta(hours=1))
    assert len(fig["data"]) == 1
    assert fig["data"][0]["x"] == [T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()]
    assert "no health transitions" in fig["layout"]["annotations"][0]["text"]
