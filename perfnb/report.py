"""The post-mortem report: ``notebooks/03_post_mortem.ipynb`` run headless into one HTML file.

:func:`build_report` (and ``perfnb report``) gives the notebook its parameters
(``STORE``, ``START``, ``END``, ``BASELINE``, ``PNG_DIR``, ``HEALTH``) in a cell placed after
the one tagged ``parameters`` — papermill's convention, without papermill — runs it
with nbclient in a fresh kernel, and exports it with nbconvert to a single static
HTML file:

- code hidden, only the narrative, tables and charts;
- charts are plain Plotly figures with their data and plotly.js inline: no CDN, no
  widget state (``application/vnd.jupyter.widget-state+json``), no MathJax or
  require.js from the network, so the file opens offline and can be mailed;
- cells tagged ``demo`` (the notebook's interactive demo recording) are left out;
- ``png`` asks the notebook for one PNG per chart (kaleido with the machine's
  Chromium).

The notebook's figure builders (:func:`timeline_figure`, :func:`write_pngs`) live
in :mod:`perfnb.reportfigures` and are re-exported here.

>>> from datetime import UTC, datetime
>>> fig = timeline_figure(None, None, start=datetime(2026, 1, 1, tzinfo=UTC),
...                       end=datetime(2026, 1, 1, 1, tzinfo=UTC))
>>> fig["data"][0]["name"]
'nothing recorded'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from perfnb._paths import notebooks_dir
from perfnb.errors import ConfigError, PerfnbError, StoreError
from perfnb.reportfigures import timeline_figure, write_pngs
from perfnb.times import to_utc

if TYPE_CHECKING:
    import nbformat

    from perfnb.analysis.healthconfig import HealthConfig

__all__ = [
    "NOTEBOOK",
    "Report",
    "ReportError",
    "build_report",
    "main_report",
    "timeline_figure",
    "write_pngs",
]

#: The post-mortem notebook shipped beside the package.
NOTEBOOK: Final = notebooks_dir() / "03_post_mortem.ipynb"
#: Cells with this tag are the notebook's interactive demo: never part of a report.
DEMO_TAG: Final = "demo"

# nbconvert's lab template without anything fetched from the network: require.js,
# MathJax and mermaid come from CDNs there, and the widget manager from unpkg.
_TEMPLATE_NAME: Final = "perfnb_report.html.j2"
_TEMPLATE: Final = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
main { max-width: 1200px; margin: 0 auto; }
.perfnb-chart { margin: 4px 0 12px 0; }
.jp-OutputArea-output table { font-size: 12px; }
</style>
{%- endblock extra_css -%}
"""
_WIDGET_MIMES: Final = (
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
)


class ReportError(PerfnbError):
    """The report could not be made (the notebook failed, or its output could not be written)."""


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote: the HTML, the PNGs, the charts it holds."""

    html: Path
    pngs: list[Path]
    charts: list[str]
    seconds: float


# -- arguments --------------------------------------------------------------------------


def _when(value: datetime | date | str, name: str) -> datetime:
    """An aware UTC datetime; strings without an offset (and bare dates) are UTC."""
    moment = to_utc(value, name=name, assume_utc=True)
    if moment is None:
        raise ConfigError(f"{name}: a time is required")
    return moment


def _check_store(root: str) -> None:
    if "://" in root:
        return  # a remote store: the kernel's Store() says what is wrong with it
    if not (Path(root) / "events").is_dir():
        raise StoreError(f"store: no perfnb store at {root!r} (it has no events/ folder)")


def _parameters(
    store: str,
    start: datetime,
    end: datetime,
    baseline: str | None,
    png: Path | None,
    health: HealthConfig | None = None,
) -> str:
    values = {
        "STORE": store,
        "START": start.isoformat(),
        "END": end.isoformat(),
        "BASELINE": baseline,
        "PNG_DIR": None if png is None else str(png),
        "HEALTH": None if health is None else json.dumps(health.to_dict(), sort_keys=True),
    }
    # repr of str/None is a Python literal: nothing the user typed can become code
    return "# Parameters of this report\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())


def _with_parameters(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    import nbformat

    cell = nbformat.v4.new_code_cell(source)  # type: ignore[no-untyped-call]  # nbformat is untyped
    cell.metadata["tags"] = ["injected-parameters"]
    index = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None
    )
    if index is None:
        raise ReportError("notebook: no cell tagged 'parameters' to put the parameters after")
    nb.cells.insert(index + 1, cell)
    return nb


# -- running and exporting --------------------------------------------------------------


def _execute(nb: nbformat.NotebookNode, workdir: Path, timeout: float) -> None:
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # IPC sockets in the private work folder: no TCP port on the machine for the
    # kernel (and none of ipykernel's warnings about unencrypted TCP)
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(workdir / "kernel"))
    client = NotebookClient(
        nb,
        km=km,
        timeout=int(timeout),
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = next(
            (
                f"{out.get('ename')}: {out.get('evalue')}"
                for cell in nb.cells
                for out in cell.get("outputs", [])
                if out.get("output_type") == "error"
            ),
            str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error",
        )
        raise ReportError(f"the post-mortem notebook failed: {failed}") from None
    except TimeoutError as exc:
        raise ReportError(f"the post-mortem notebook ran past {timeout:g} s: {exc}") from None
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Leave out demo cells, stderr, and anything live: the report is static."""
    nb.metadata.pop("widgets", None)
    kept = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if DEMO_TAG in tags:
            continue
        if cell.cell_type == "code":
            outputs = []
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    continue
                data = out.get("data")
                if data is not None:
                    for mime in _WIDGET_MIMES:
                        data.pop(mime, None)
                    if not data:
                        continue
                outputs.append(out)
            cell.outputs = outputs
        kept.append(cell)
    nb.cells = kept
    return nb


def _export(nb: nbformat.NotebookNode, title: str) -> str:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb.metadata["title"] = title
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]  # nbconvert is untyped
        template_name="lab",
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        template_file=_TEMPLATE_NAME,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _resources = exporter.from_notebook_node(nb)
    return str(body)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)  # a reader never sees half a report
    except OSError as exc:
        raise ReportError(f"out: could not write {str(path)!r}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()


_CHART: Final = re.compile(r"""class=["']perfnb-chart["'] data-chart=["']([^"']*)["']""")


def build_report(
    store_root: str | os.PathLike[str],
    start: datetime | date | str,
    end: datetime | date | str,
    *,
    out: str | os.PathLike[str],
    baseline: str | None = None,
    png: str | os.PathLike[str] | None = None,
    notebook: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    health: HealthConfig | None = None,
) -> Report:
    """Run the post-mortem notebook over ``[start, end)`` of a store; write one HTML file.

    ``baseline`` names a saved baseline (:mod:`perfnb.analysis.compare`) to compare
    the range with; ``png`` a folder for one PNG per chart; ``health`` the
    thresholds the health engine replays the range with when nothing watched it
    live (no ``health``/``alert`` records in it). Strings without an
    offset are UTC. Bad arguments raise :class:`~perfnb.errors.ConfigError` or
    :class:`~perfnb.errors.StoreError` before any kernel starts; a failing notebook
    raises :class:`ReportError` (the executed notebook is kept beside ``out`` as
    ``<out>.failed.ipynb``).

    >>> build_report("/nowhere", "2026-01-01", "2026-01-02", out="r.html")
    Traceback (most recent call last):
    ...
    perfnb.errors.StoreError: store: no perfnb store at '/nowhere' (it has no events/ folder)
    """
    import nbformat

    began = time.monotonic()
    root = os.fspath(store_root)
    if "://" not in root:
        root = str(Path(root).absolute())
    first, last = _when(start, "start"), _when(end, "end")
    if last <= first:
        raise ConfigError(f"end: got {last.isoformat()}; expected a time after start {first}")
    _check_store(root)
    if baseline is not None:
        from perfnb.analysis.compare import load_baseline
        from perfnb.store import Store

        load_baseline(Store(root), baseline)  # a wrong name fails now, not in the kernel
    target = Path(out).absolute()
    png_dir = None if png is None else Path(png).absolute()
    source = Path(notebook) if notebook is not None else NOTEBOOK
    if not source.is_file():
        raise ConfigError(f"notebook: {str(source)!r} is not a file")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(source, as_version=4)  # type: ignore[no-untyped-call]
    _with_parameters(nb, _parameters(root, first, last, baseline, png_dir, health))
    with tempfile.TemporaryDirectory(prefix="perfnb-report-") as workdir:
        try:
            _execute(nb, Path(workdir), timeout)
        except ReportError:
            with contextlib.suppress(OSError):
                nbformat.write(nb, str(target) + ".failed.ipynb")  # type: ignore[no-untyped-call]
            raise
    title = f"Post-mortem {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC"
    html = _export(_strip(nb), title)
    _write_text(target, html)
    pngs = sorted(png_dir.glob("*.png")) if png_dir is not None else []
    return Report(
        html=target,
        pngs=pngs,
        charts=_CHART.findall(html),
        seconds=time.monotonic() - began,
    )


# -- the command ------------------------------------------------------------------------


def _health_config(path: str | None) -> HealthConfig | None:
    from perfnb.analysis.healthconfig import HealthConfig

    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--health-config: cannot read {path!r} ({exc})") from None
    try:
        return HealthConfig.from_json(text)
    except ConfigError as exc:
        raise ConfigError(f"--health-config {path}: {exc}") from None


def main_report(argv: Sequence[str]) -> int:
    """``perfnb report``: the post-mortem of a time range of a store as one HTML file.

    Exit codes: 0 written, 1 the notebook failed, 2 bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="perfnb report",
        description=(
            "Run notebooks/03_post_mortem.ipynb headless over a time range of a store and "
            "write one self-contained HTML file (charts frozen, plotly.js inline, no code)."
        ),
    )
    parser.add_argument("--store", required=True, help="the store folder")
    parser.add_argument(
        "--from", dest="start", required=True, help="start, ISO 8601 (no offset means UTC)"
    )
    parser.add_argument("--to", dest="end", required=True, help="end (exclusive), ISO 8601")
    parser.add_argument("--baseline", help="a saved baseline to compare the range with")
    parser.add_argument("--out", default="report.html", help="the HTML file (default: %(default)s)")
    parser.add_argument("--png", metavar="DIR", help="also write one PNG per chart into DIR")
    parser.add_argument("--notebook", help="another post-mortem notebook to run")
    parser.add_argument(
        "--health-config",
        metavar="FILE.json",
        help="health thresholds for replaying the range when nothing watched it live",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per cell (default: %(default)s)"
    )
    args = parser.parse_args(list(argv))
    try:
        health = _health_config(args.health_config)
        report = build_report(
            args.store,
            args.start,
            args.end,
            out=args.out,
            baseline=args.baseline,
            png=args.png,
            notebook=args.notebook,
            timeout=args.timeout,
            health=health,
        )
    except ReportError as exc:
        print(f"perfnb report: {exc}", file=sys.stderr)
        return 1
    except PerfnbError as exc:
        print(f"perfnb report: {exc}", file=sys.stderr)
        return 2
    size = report.html.stat().st_size / 1024
    print(
        f"wrote {report.html} ({len(report.charts)} charts, {size:,.0f} KiB) "
        f"in {report.seconds:.1f} s"
        + (f"; {len(report.pngs)} PNGs in {args.png}" if report.pngs else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_report(sys.argv[1:]))
