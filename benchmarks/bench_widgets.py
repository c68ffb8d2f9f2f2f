"""Widgets in a real browser: time to first painted chart, and the kernel's CPU while following.

One JupyterLab (isolated, 127.0.0.1, token) and one headless Debian chromium page; the
kernel is warmed up first (imports done, one widget of each kind shown). Then, in
interleaved rounds on the same page, the time from running a cell to:

- a minimal anywidget's element appearing (the floor for any anywidget),
- a plain Plotly ``FigureWidget``'s chart being painted,
- perfnb's ``Dashboard`` painting its first chart (plotly.js loaded once per page: the
  first round pays for it, later rounds do not; both are shown).

Then the kernel's CPU while a displayed dashboard follows 1,000 records/s delivered
once a second, against the same feed with no dashboard (the difference is the
dashboard's own cost). Targets: ≥ 10× faster than the FigureWidget, within 1.5× of
the minimal anywidget, ≤ 5% of one core.

Run: ``python -m benchmarks widgets`` (about 2 minutes).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

ROUNDS = 4
FOLLOW_SECONDS = 15

SETUP = """
import time, random, threading
from datetime import datetime, timezone, timedelta
import anywidget, traitlets
import plotly.graph_objects as go
from perfnb.stream import Stream
from perfnb.widgets import Dashboard

class Minimal(anywidget.AnyWidget):
    _esm = ("export default { render({ el }) { const d = document.createElement('div');"
            " d.className = 'bench-minimal'; d.textContent = 'minimal'; el.append(d); } }")

stream = Stream(max_age=600)
ROUTES = ["/api/poll", "/api/cards", "/api/cards/{card_id}", "/api/presence", "/api/login",
          "/api/conversations", "/api/health", "/api/cards/export"]

def batch(n=1000):
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        out.append({"time": now - timedelta(milliseconds=i), "source": "server", "kind": "http",
                    "route": ROUTES[i % len(ROUTES)], "method": "GET",
                    "status": 500 if i % 97 == 0 else 200,
                    "duration_ms": random.lognormvariate(2.5, 0.6), "client": f"c{i % 40}"})
    out.append({"time": now, "source": "server", "kind": "process", "name": "rss_bytes",
                "value": 80e6})
    return out

def follow(seconds):
    # 1,000 records/s, delivered once a second, as a feed client would
    start_cpu, start = time.process_time(), time.monotonic()
    for k in range(seconds):
        stream.extend(batch())
        time.sleep(max(0.0, start + k + 1 - time.monotonic()))
    return (time.process_time() - start_cpu) / (time.monotonic() - start)
"""

WARM = "w1 = Minimal(); w2 = go.FigureWidget(); w3 = Dashboard(stream, title='warm-up')\nw1"
CONTENDERS = {
    "minimal anywidget": ("Minimal()", ".bench-minimal"),
    "Plotly FigureWidget": ("go.FigureWidget(data=[go.Scatter(y=[1, 3, 2])])", ".main-svg"),
    "perfnb Dashboard": (
        "Dashboard(stream, window=60)",
        ".perfnb-chart[data-painted]",
    ),
}

TIME_CELL = """
async ([index, selector]) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const nb = panel.content;
  nb.activeCellIndex = index;
  const cell = nb.widgets[index];
  const t0 = performance.now();
  window.jupyterapp.commands.execute('notebook:run-cell');
  while (!cell.node.querySelector(selector)) {
    await new Promise((r) => setTimeout(r, 2));
    if (performance.now() - t0 > 60000) { return -1; }
  }
  return performance.now() - t0;
}
"""


def _notebook(path: Path) -> dict[str, int]:
    import nbformat

    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    cells = [SETUP, WARM]
    index: dict[str, int] = {"setup": 0, "warm": 1}
    for r in range(ROUNDS):
        for name, (source, _sel) in CONTENDERS.items():
            index[f"{name}#{r}"] = len(cells)
            cells.append(source)
    index["baseline"] = len(cells)
    cells.append(f"baseline_cpu = follow({FOLLOW_SECONDS}); baseline_cpu")
    index["dash"] = len(cells)
    cells.append(
        "followed = Dashboard(stream, window=60, title='following 1,000 records/s')\nfollowed"
    )
    index["follow"] = len(cells)
    cells.append(f"follow_cpu = follow({FOLLOW_SECONDS}); follow_cpu")
    index["updates"] = len(cells)
    cells.append("print(followed.updates_sent, followed.callback_errors)")
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return index


def _last_output(page: Any, index: int) -> str:
    text: str = page.evaluate(
        "(i) => JSON.stringify(window.jupyterapp.shell.currentWidget.content.widgets[i]"
        ".model.outputs.toJSON())",
        index,
    )
    outs = json.loads(text)
    for out in outs:
        if "data" in out:
            return str(out["data"].get("text/plain", ""))
        if "text" in out:
            return str(out["text"])
    return ""


def _run(page: Any, index: int, timeout_s: float = 120.0) -> None:
    page.evaluate(
        "(i) => { const nb = window.jupyterapp.shell.currentWidget.content;"
        " nb.activeCellIndex = i; window.jupyterapp.commands.execute('notebook:run-cell'); }",
        index,
    )
    _wait_done(page, index, timeout_s)


def _wait_done(page: Any, index: int, timeout_s: float = 120.0) -> None:
    page.wait_for_function(
        "(i) => { const c = window.jupyterapp.shell.currentWidget.content.widgets[i];"
        " return c.model.executionCount !== null &&"
        " !c.node.querySelector('.jp-InputPrompt').textContent.includes('*'); }",
        arg=index,
        timeout=timeout_s * 1000,
    )


def main() -> None:
    from playwright.sync_api import sync_playwright

    from perfnb.widgets.lab import LabServer

    with tempfile.TemporaryDirectory(prefix="perfnb-bench-") as tmp:
        root = Path(tmp)
        index = _notebook(root / "bench.ipynb")
        with LabServer(root=root, isolated=True, expose_app=True) as lab, sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(lab.url("bench.ipynb"))
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session",
                timeout=120_000,
            )
            _run(page, index["setup"])
            _run(page, index["warm"])
            times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
            for r in range(ROUNDS):
                for name, (_source, selector) in CONTENDERS.items():
                    ms = page.evaluate(TIME_CELL, [index[f"{name}#{r}"], selector])
                    times[name].append(float(ms))
                    _wait_done(page, index[f"{name}#{r}"])
            _run(page, index["baseline"], timeout_s=FOLLOW_SECONDS + 60)
            baseline = float(_last_output(page, index["baseline"]))
            _run(page, index["dash"])
            page.wait_for_selector(".perfnb-chart[data-painted]")
            _run(page, index["follow"], timeout_s=FOLLOW_SECONDS + 60)
            following = float(_last_output(page, index["follow"]))
            _run(page, index["updates"])
            updates = _last_output(page, index["updates"]).split()
            browser.close()

    print(
        f"time from running the cell to the first painted chart (ms), {ROUNDS} rounds, "
        "warm kernel, same page"
    )
    print(f"{'contender':<24} {'first':>8} {'median':>8} {'median of later':>16}")
    med = {}
    for name, values in times.items():
        later = values[1:] or values
        med[name] = statistics.median(values)
        print(f"{name:<24} {values[0]:>8.0f} {med[name]:>8.0f} {statistics.median(later):>16.0f}")
    dash, fig, mini = med["perfnb Dashboard"], med["Plotly FigureWidget"], med["minimal anywidget"]
    speedup = fig / dash if dash > 0 else float("inf")
    vs_min = dash / mini if mini > 0 else float("inf")
    print(
        f"Dashboard vs FigureWidget: {speedup:.1f}× faster (target ≥ 10×): "
        f"{'met' if speedup >= 10 else 'NOT met'}"
    )
    print(
        f"Dashboard vs minimal anywidget: {vs_min:.2f}× (target ≤ 1.5×): "
        f"{'met' if vs_min <= 1.5 else 'NOT met'}"
    )
    share = max(0.0, following - baseline)
    print(
        f"kernel CPU following 1,000 records/s at 1 Hz ({FOLLOW_SECONDS} s): "
        f"{following:.1%} of a core with the dashboard, {baseline:.1%} without "
        f"(feed + stream); the dashboard's share {share:.1%} (target ≤ 5%): "
        f"{'met' if share <= 0.05 else 'NOT met'}; updates sent {updates[0] if updates else '?'}"
    )


if __name__ == "__main__":
    main()
