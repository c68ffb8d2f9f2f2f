"""Exports from a real store in tmp_path: round trips, spreadsheets, filters, progress, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import T0, http

from perfnb.errors import ConfigError, StoreError
from perfnb.schema import COLUMN_NAMES, KINDS, MAX_TAG_KEY, SOURCES, record_from_json
from perfnb.store import Store
from perfnb.store.export import (
    ExportResult,
    export_store,
    main_export,
    neutralise,
    read_export,
)
from perfnb.store.progress import progress_reporter

FORMATS = ("csv", "json", "jsonl", "parquet")


def same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Frames equal in values and dtypes; categories compared as sets of used values."""
    left, right = left.copy(), right.copy()
    for frame in (left, right):
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.CategoricalDtype):
                column = frame[name].cat.remove_unused_categories()
                frame[name] = column.cat.reorder_categories(sorted(column.cat.categories))
    pd.testing.assert_frame_equal(left.reset_index(drop=True), right.reset_index(drop=True))


# -- round trips ---------------------------------------------------------------------------

_text = st.text(max_size=12)
_ms = st.integers(-(10**12), 10**12).map(lambda us: us / 1000)


def _record() -> st.SearchStrategy[dict[str, Any]]:
    text = _text
    optional: dict[str, st.SearchStrategy[Any]] = {
        "service": text,
        "route": text,
        "method": st.sampled_from(["GET", "POST", "WS"]),
        "status": st.integers(-(2**15), 2**15 - 1),
        "duration_ms": _ms,
        "ttfb_ms": _ms,
        "request_bytes": st.integers(-(2**63), 2**63 - 1),
        "response_bytes": st.integers(0, 2**40),
        "server_ms": _ms,
        "messages_out": st.integers(-(2**31), 2**31 - 1),
        "error_type": st.sampled_from(["timeout", "=cmd", "-x", "@y"]),
        "error_message": text,
        "run_id": st.sampled_from(["run-1", "run-2"]),
        "name": text,
        "value": st.floats(allow_nan=False),
        "unit": st.sampled_from(["ms", "bytes"]),
        "tags": st.dictionaries(st.text(max_size=MAX_TAG_KEY), text, max_size=3),
    }
    return st.fixed_dictionaries(
        {
            "time": st.datetimes(
                min_value=datetime(2026, 3, 1),
                max_value=datetime(2026, 3, 4),
                timezones=st.just(UTC),
            ),
            "source": st.sampled_from(sorted(SOURCES)),
            "kind": st.sampled_from(sorted(KINDS)),
        },
        optional=optional,
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record(), min_size=0, max_size=25))
def test_every_format_round_trips_generated_records(records: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store")
        store.append(records)
        expected = store.read(include_load=True)
        for fmt in FORMATS:
            out = Path(folder) / f"out.{fmt}"
            result = export_store(store, out, include_load=True, progress=False)
            assert result == ExportResult(out, fmt, len(records), out.stat().st_size)
            same(read_export(out), expected)


def test_json_lines_are_records_in_the_wire_form(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append([http(1, duration_ms=0.001, tags={"a": "b"}), http(2, value=1e300)])
    out = tmp_path / "out.jsonl"
    store.export(out, progress=False)
    lines = out.read_text().split("\n")[:-1]
    first = json.loads(lines[0])
    assert first["time"] == "2026-03-01T12:00:00.001000Z"
    assert first["duration_ms"] == 0.001
    assert first["tags"] == {"a": "b"}
    assert "ttfb_ms" not in first  # nulls are left out
    assert record_from_json(json.loads(lines[1]))["value"] == 1e300
    array = tmp_path / "out.json"
    store.export(array, progress=False)
    assert [record_from_json(o) for o in json.loads(array.read_text())] == [
        record_from_json(json.loads(line)) for line in lines
    ]


def test_parquet_export_is_plain_parquet(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append([http(i) for i in range(50)])
    out = tmp_path / "out.parquet"
    store.export(out, progress=False)
    schema = pq.read_schema(out)
    assert schema.metadata[b"perfnb.schema_version"] == b"1"
    assert str(schema.field("duration_ms").type) == "double"
    con = duckdb.connect()
    count = con.execute(f"SELECT count(*), sum(request_bytes) FROM '{out}'").fetchone()
    con.close()
    assert count == (50, sum(range(50)))


def test_columns_subset(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append([http(i) for i in range(10)])
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"some.{fmt}"
        store.export(out, columns=["route", "duration_ms"], progress=False)
        same(read_export(out), store.read(columns=["route", "duration_ms"]))
    # JSON objects stay records: time, source and kind come along.
    out = tmp_path / "some.jsonl"
    store.export(out, columns=["route"], progress=False)
    assert set(json.loads(out.read_text().splitlines()[0])) == {"time", "source", "kind", "route"}
    same(read_export(out, columns=["route"]), store.read(columns=["route"]))


# -- spreadsheet safety -----------------------------------------------------------------

INJECTIONS = ["=SUM(A1)", "+1", "-2+3", "@cmd", "\t=1", "\r=1", "=cmd|' /C calc'!A0", "＝1"]


def test_formula_injection_is_neutralised_in_every_text_column(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    records = []
    for i, attack in enumerate(INJECTIONS):
        records.append(
            {
                "time": T0 + timedelta(seconds=i),
                "source": "client",
                "kind": "http",
                "service": attack,
                "route": attack,
                "method": attack,
                "error_type": attack,
                "error_message": attack,
                "client": attack,
                "name": attack,
                "unit": attack,
                "tags": {attack: attack},
                "duration_ms": -2.5,
                "value": -3.0,
                "messages_out": -7,
                "status": -1,
            }
        )
    store.append(records)
    out = tmp_path / "out.csv"
    store.export(out, progress=False)
    raw = out.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    header, body = rows[0], rows[1:]
    assert header == list(COLUMN_NAMES)
    assert len(body) == len(INJECTIONS)
    numeric = {"status", "duration_ms", "value", "messages_out"}
    for row in body:
        for name, cell in zip(header, row, strict=True):
            if name in numeric:
                assert cell.startswith("-")  # numbers stay numbers, sign included
                float(cell)
            elif cell:
                assert cell[0] not in "=+-@\t\r＝", (name, cell)
    # Negative numbers are bare (unquoted) cells in the file.
    assert ",-1,-2.5," in raw
    assert ",-7," in raw
    assert ",-3," in raw
    # Text with a formula character inside (not first) is left alone.
    assert neutralise("a=b") == "a=b"
    assert neutralise("") == ""
    back = read_export(out)
    assert back["route"].tolist() == INJECTIONS
    assert back["tags"].tolist() == [{a: a} for a in INJECTIONS]


def test_quotes_already_in_front_still_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    values = ["'=1", "''+2", "'", "'plain", "=x"]
    store.append([http(i, route=v, error_message=v) for i, v in enumerate(values)])
    out = tmp_path / "q.csv"
    store.export(out, progress=False)
    back = read_export(out)
    assert back["route"].tolist() == values
    assert back["error_message"].tolist() == values


# -- filters, ranges, windows ----------------------------------------------------------------


ROWS = 120


@pytest.fixture
def days_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    records = []
    for i in range(ROWS):
        records.append(
            http(
                i,
                at=T0 + timedelta(minutes=37 * i),  # three and a bit days
                source=("server", "client", "browser")[i % 3],
                kind=("http", "vital")[i % 2],
                service=("shop", "api")[i % 5 == 0],
                run_id="run-1" if i % 11 == 0 else None,
            )
        )
    store.append(records)
    return store


FILTERS: list[dict[str, Any]] = [
    {},
    {"include_load": True},
    {"start": "2026-03-02", "end": "2026-03-03T06:30:00Z"},
    {"start": T0 + timedelta(days=1, hours=5)},
    {"routes": ["/api/items/{item_id}/1"], "kinds": ["http"]},
    {"sources": ["client", "browser"], "services": ["api"]},
    {"run_ids": ["run-1"]},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "all")
def test_filters_and_time_range_match_read(
    days_store: Store, tmp_path: Path, filters: dict[str, Any]
) -> None:
    expected = days_store.read(**filters)
    assert 0 < len(expected) < ROWS or filters.get("include_load")
    out = tmp_path / "f.jsonl"
    # Small windows: each day is read in several slices, all must meet again.
    result = export_store(days_store, out, progress=False, window_rows=10, batch_rows=4, **filters)
    assert result.rows == len(expected)
    same(read_export(out), expected)


def test_progress_counts_up_to_the_total(days_store: Store, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    total = sum(pq.read_metadata(p).num_rows for p in days_store.files())
    result = export_store(
        days_store,
        tmp_path / "p.csv",
        kinds=["http"],
        progress=lambda done, all_: calls.append((done, all_)),
        batch_rows=3,
        window_rows=10,
    )
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert {t for _d, t in calls} == {total}
    dones = [d for d, _t in calls]
    assert dones == sorted(set(dones))  # strictly increasing
    assert len(calls) > 10
    assert result.rows == len(days_store.read(kinds=["http"])) < total


def test_progress_on_an_empty_range(days_store: Store, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    result = days_store.export(
        tmp_path / "e.json", start="2030-01-01", progress=lambda *a: calls.append(a)
    )
    assert calls == [(0, 0)]
    assert result.rows == 0
    assert json.loads((tmp_path / "e.json").read_text()) == []


def test_progress_bar_on_stderr(
    days_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    days_store.export(tmp_path / "quiet.csv")  # stderr is no terminal here: nothing shown
    assert capsys.readouterr().err == ""
    days_store.export(tmp_path / "loud.csv", progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rexport loud.csv [")
    assert err.endswith(f" 100% {ROWS}/{ROWS} rows\n")


def test_progress_widget_chosen_in_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []

    class Shell:
        kernel = object()

    class IntProgress:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)
            self.bar_style = ""

    ipython = type(sys)("IPython")
    ipython.get_ipython = Shell  # type: ignore[attr-defined]
    display = type(sys)("IPython.display")
    display.display = shown.append  # type: ignore[attr-defined]
    widgets = type(sys)("ipywidgets")
    widgets.IntProgress = IntProgress  # type: ignore[attr-defined]
    for name, module in (
        ("IPython", ipython),
        ("IPython.display", display),
        ("ipywidgets", widgets),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    report = progress_reporter(None, total=10, label="export x.csv")
    report(10)
    report.close()
    (bar,) = shown
    assert (bar.max, bar.value, bar.bar_style) == (10, 10, "success")
    with pytest.raises(ConfigError, match="progress: got 'yes'"):
        progress_reporter("yes", total=1, label="x")  # type: ignore[arg-type]


# -- atomic writes and bad arguments ------------------------------------------------------


def test_a_failed_export_leaves_the_old_file(days_store: Store, tmp_path: Path) -> None:
    out = tmp_path / "keep.csv"
    out.write_text("old\n")

    def explode(done: int, total: int) -> None:
        if done > 30:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        export_store(days_store, out, progress=explode, batch_rows=5)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv", "store"]
    days_store.export(out, progress=False)
    assert out.read_text().startswith("time,source,kind,")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"format": "xlsx"}, ConfigError, "format: got 'xlsx'; expected one of csv, json"),
        ({"path": "out.txt"}, ConfigError, r"format: cannot infer it from the suffix"),
        ({"start": "yesterday"}, StoreError, "start: got 'yesterday'"),
        ({"end": datetime(2026, 1, 1)}, StoreError, "end: got naive"),
        ({"columns": ["route", "nope"]}, StoreError, "columns: unknown 'nope'"),
        ({"path": "missing/out.csv"}, StoreError, "path: the folder .* does not exist"),
        ({"path": "."}, ConfigError, "format: cannot infer"),
        ({"path": ".", "format": "csv"}, StoreError, "path: .* is a directory"),
    ],
)
def test_bad_arguments(
    days_store: Store, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    path = tmp_path / kwargs.pop("path", "out.csv")
    with pytest.raises(error, match=match):
        days_store.export(path, progress=False, **kwargs)


def test_read_export_names_the_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = '{"time": "2026-01-01T00:00:00Z", "source": "server", "kind": "http"}'
    bad.write_text(
        good + "\n" + '{"time": "2026-01-01T00:00:00Z", "source": "x", "kind": "http"}\n'
    )
    with pytest.raises(StoreError, match="line 2: column 'source'"):
        read_export(bad)
    bad.write_text(good + "\n{oops\n")
    with pytest.raises(StoreError, match="not JSON"):
        read_export(bad)
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("time,status\n2026-01-01T00:00:00Z,abc\n")
    with pytest.raises(StoreError, match=r"cannot read it as a CSV export: .*int16.*'abc'"):
        read_export(csv_bad)


# -- the command -------------------------------------------------------------------------------


def test_main_export_bad_arguments(
    days_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(days_store.root)
    cases = [
        (["--store", str(tmp_path / "nowhere"), "--out", "x.csv"], "--store: no perfnb store"),
        (
            ["--store", root, "--out", str(tmp_path / "x.csv"), "--from", "soon"],
            "--from: got 'soon'",
        ),
        (["--store", root, "--out", str(tmp_path / "x.csv"), "--to", "2026-13-01"], "--to:"),
        (["--store", root, "--out", str(tmp_path / "x.xls")], "--format: cannot infer"),
        (["--store", root, "--out", str(tmp_path / "x.csv"), "--column", "bad"], "--column:"),
        (["--store", root, "--out", str(tmp_path / "no" / "x.csv")], "--out:"),
        (["--store", root, "--out", str(tmp_path / "x.csv"), "--format", "xml"], "--format"),
        (["--out", "x.csv"], "--store"),
    ]
    for argv, message in cases:
        assert main_export(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "nowhere").exists()  # a mistyped store is not created


@pytest.mark.slow
def test_cli_end_to_end_in_a_subprocess(days_store: Store, tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    code = (
        "import sys; from perfnb.store.export import main_export; "
        "sys.exit(main_export(sys.argv[1:]))"
    )
    argv = [
        sys.executable,
        "-c",
        code,
        "--store",
        str(days_store.root),
        "--out",
        str(out),
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-10T00:00:00+00:00",
        "--route",
        "/api/items/{item_id}/0",
        "/api/items/{item_id}/2",
        "--kind",
        "http",
        "--include-load",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr
    expected = days_store.read(
        "2026-03-02",
        "2026-03-10",
        routes=["/api/items/{item_id}/0", "/api/items/{item_id}/2"],
        kinds=["http"],
        include_load=True,
    )
    assert done.stdout.startswith(f"exported {len(expected)} records to {out} (csv, ")
    assert done.stderr == ""  # no terminal: no progress bar
    same(read_export(out), expected)
    bad = subprocess.run([*argv[:5], "--out", str(out), "--from", "later"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2
    assert "--from: got 'later'" in bad.stderr


KERNEL_CODE = """
import sys, tempfile, pathlib
from datetime import datetime, timezone, timedelta
from perfnb.store import Store
import perfnb.store.export
print("ipywidgets imported:", "ipywidgets" in sys.modules)
folder = pathlib.Path(tempfile.mkdtemp())
store = Store(folder / "s")
t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
store.append([{"time": t0 + timedelta(hours=i), "source": "server", "kind": "http"}
              for i in range(60)])
print("rows:", store.export(folder / "out.csv").rows)
"""


@pytest.mark.slow
def test_progress_widget_in_a_real_kernel() -> None:
    manager = pytest.importorskip("jupyter_client.manager")
    kernel, client = manager.start_new_kernel(kernel_name="python3")
    try:
        msg_id = client.execute(KERNEL_CODE)
        messages = []
        while True:
            msg = client.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append((msg["msg_type"], msg["content"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)
    printed = "".join(c["text"] for t, c in messages if t == "stream")
    assert printed == "ipywidgets imported: False\nrows: 60\n", messages
    (shown,) = [c["data"] for t, c in messages if t == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in shown
    assert shown["text/plain"].startswith("IntProgress(value=0, description='export out.csv'")
    updates = [c["data"]["state"] for t, c in messages if t == "comm_msg"]
    assert {"value": 60} in updates
    assert {"bar_style": "success"} in updates
