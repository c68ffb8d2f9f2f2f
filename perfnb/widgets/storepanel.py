"""Retention and export in a notebook: what the store holds, what retention would remove.

:class:`StorePanel` is two ipywidgets panels over one :class:`~perfnb.store.Store`:

- **Retention**: the partitions (days, files, rows, bytes, whether a summary is
  kept), the windows (detail and summary days), a dry run listing what would go
  and how many bytes it frees, and an *Apply* button that runs the plan off the
  kernel's thread after a confirmation tick, logging each step.
- **Export**: a time range, filters, a format and a path; *Export* writes the file
  off the kernel's thread with a progress bar, and shows rows and bytes written.

Everything the buttons do is also a method (:meth:`StorePanel.dry_run`,
:meth:`StorePanel.apply`, :meth:`StorePanel.export`), so the panel can be
driven from code and tested without a browser.

>>> import tempfile
>>> from perfnb.store import Store
>>> panel = StorePanel(Store(tempfile.mkdtemp()))
>>> panel.dry_run().delete_detail
()
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from perfnb.errors import PerfnbError
from perfnb.store.export import ExportResult
from perfnb.store.retention import (
    DEFAULT_DETAIL_DAYS,
    DEFAULT_SUMMARY_DAYS,
    RetentionPlan,
    RetentionResult,
)

if TYPE_CHECKING:
    from perfnb.store import Store

__all__ = ["StorePanel", "human_bytes"]

_FORMATS = ("csv", "jsonl", "json", "parquet")


def human_bytes(count: float) -> str:
    """``count`` bytes for people.

    >>> human_bytes(1536)
    '1.5 KiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


class StorePanel:
    """The retention and export panels for ``store``; display it in a notebook cell.

    ``exports`` is the folder the export path starts in.
    """

    def __init__(self, store: Store, *, exports: str | Path = "exports") -> None:
        self.store = store
        self.plan: RetentionPlan | None = None
        self.last_result: RetentionResult | None = None
        self.last_export: ExportResult | None = None
        self._busy = threading.Lock()
        self._threads: list[threading.Thread] = []
        # retention
        self.detail_days = w.BoundedIntText(
            value=DEFAULT_DETAIL_DAYS, min=1, max=36_500, description="detail days"
        )
        self.summary_days = w.BoundedIntText(
            value=DEFAULT_SUMMARY_DAYS, min=1, max=36_500, description="summary days"
        )
        self.table = w.HTML()
        self.plan_view = w.HTML()
        self.confirm = w.Checkbox(value=False, description="I mean it", indent=False)
        self.dry_button = w.Button(description="Dry run", icon="search")
        self.apply_button = w.Button(description="Apply", icon="trash", button_style="danger")
        self.log = w.Output(layout=w.Layout(max_height="12em", overflow="auto"))
        self.dry_button.on_click(lambda _: self._safely(self.dry_run, self.plan_view))
        self.apply_button.on_click(
            lambda _: self._in_background(self._apply_clicked, self.plan_view)
        )
        # export
        today = datetime.now(UTC).date()
        self.start = w.DatePicker(value=today - timedelta(days=1), description="from")
        self.end = w.DatePicker(value=today, description="to (incl.)")
        self.routes = w.Text(placeholder="all routes; comma-separated", description="routes")
        self.include_load = w.Checkbox(value=False, description="include load runs")
        self.format = w.Dropdown(options=_FORMATS, value="csv", description="format")
        self.path = w.Text(value=str(Path(exports) / "perfnb-export.csv"), description="file")
        self.export_button = w.Button(description="Export", icon="download")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="rows")
        self.export_view = w.HTML()
        self.format.observe(self._format_changed, names="value")
        self.export_button.on_click(
            lambda _: self._in_background(self._export_clicked, self.export_view)
        )
        self.refresh()

    # -- what the buttons do -----------------------------------------------------------

    def refresh(self) -> None:
        """Show the store's partitions again."""
        frame = self.store.partitions()
        if frame.empty:
            self.table.value = "<i>The store holds nothing yet.</i>"
            return
        shown = frame.assign(
            detail_bytes=frame["detail_bytes"].map(human_bytes),
            summary_bytes=frame["summary_bytes"].map(human_bytes),
        )
        total = int(frame["detail_bytes"].sum() + frame["summary_bytes"].sum())
        self.table.value = f"<b>{len(frame)} day(s), {human_bytes(total)}</b>" + shown.to_html(
            index=False, classes="perfnb-partitions", border=0
        )

    def dry_run(self) -> RetentionPlan:
        """The retention plan for the windows set in the panel; nothing is touched."""
        plan = self.store.retention(
            detail_days=int(self.detail_days.value), summary_days=int(self.summary_days.value)
        )
        self.plan = plan
        self.plan_view.value = _describe_plan(plan)
        return plan

    def apply(self) -> RetentionResult:
        """Carry out a fresh plan for the windows set in the panel (no confirmation asked)."""
        with self._busy:
            plan = self.dry_run()
            result = plan.apply(progress=self._logged)
            self.last_result = result
            self.refresh()
            self.plan_view.value = _describe_result(result)
            return result

    def export(self) -> ExportResult:
        """Export the range and filters set in the panel to its path."""
        with self._busy:
            start = self.start.value
            end = self.end.value
            if start is None or end is None:
                raise PerfnbError("export: choose both dates")
            routes = [r.strip() for r in self.routes.value.split(",") if r.strip()]
            self.progress.value = 0
            target = Path(self.path.value)
            target.parent.mkdir(parents=True, exist_ok=True)  # a folder typed into the panel
            result = self.store.export(
                target,
                start=_midnight(start),
                end=_midnight(end + timedelta(days=1)),
                routes=routes or None,
                include_load=bool(self.include_load.value),
                format=self.format.value,
                progress=self._progressed,
            )
            self.last_export = result
            self.export_view.value = html.escape(
                f"{result.rows:,} records → {result.path} ({human_bytes(result.bytes)})"
            )
            return result

    # -- plumbing ------------------------------------------------------------------------

    def _apply_clicked(self) -> None:
        if not self.confirm.value:
            self.plan_view.value = "<b>Tick “I mean it” to apply retention.</b>"
            return
        self.confirm.value = False
        self.apply()

    def _export_clicked(self) -> None:
        self.export()

    def _format_changed(self, change: dict[str, Any]) -> None:
        path = Path(self.path.value)
        self.path.value = str(path.with_suffix("." + change["new"]))

    def _logged(self, step: str, what: str) -> None:
        self.log.append_stdout(f"{step}: {what}\n")

    def _progressed(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = min(done, self.progress.max)

    @staticmethod
    def _safely(action: Callable[[], object], view: w.HTML) -> None:
        """Run ``action``; a failure is shown in ``view`` instead of escaping into a thread."""
        try:
            action()
        except (PerfnbError, OSError) as exc:
            view.value = f"<b>{html.escape(str(exc))}</b>"

    def _in_background(self, action: Callable[[], object], view: w.HTML) -> None:
        # Off the kernel's thread: a long export or retention never freezes the notebook.
        thread = threading.Thread(target=self._safely, args=(action, view), daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the work the buttons started (for scripts and tests)."""
        for thread in list(self._threads):
            thread.join(timeout)

    # -- display -------------------------------------------------------------------------

    def widget(self) -> w.Widget:
        """The two panels as one widget."""
        retention = w.VBox(
            [
                self.table,
                w.HBox([self.detail_days, self.summary_days]),
                w.HBox([self.dry_button, self.confirm, self.apply_button]),
                self.plan_view,
                self.log,
            ]
        )
        export = w.VBox(
            [
                w.HBox([self.start, self.end]),
                w.HBox([self.routes, self.include_load]),
                w.HBox([self.format, self.path]),
                w.HBox([self.export_button, self.progress]),
                self.export_view,
            ]
        )
        tabs = w.Tab(children=[retention, export])
        tabs.set_title(0, "Retention")
        tabs.set_title(1, "Export")
        return tabs

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())  # type: ignore[no-untyped-call]


def _days(days: tuple[date, ...] | list[date]) -> str:
    if not days:
        return "none"
    if len(days) == 1:
        return days[0].isoformat()
    return f"{len(days)} days, {days[0]} … {days[-1]}"


def _describe_plan(plan: RetentionPlan) -> str:
    lines = [
        f"<b>Dry run</b> (today {plan.today} UTC; detail {plan.detail_days} days, "
        f"summaries {plan.summary_days} days)",
        f"detail to delete: {_days(plan.delete_detail)} ({human_bytes(plan.detail_bytes)})",
        f"summaries to delete: {_days(plan.delete_summaries)} ({human_bytes(plan.summary_bytes)})",
        f"summaries to write and verify first: {_days(sorted(plan.summarize))}",
        f"closed days to compact: {_days(plan.compact)}",
        f"<b>frees {human_bytes(plan.bytes_freed)}</b>",
    ]
    return "<br>".join(lines)


def _describe_result(result: RetentionResult) -> str:
    lines = [
        f"<b>Applied</b>: freed {human_bytes(result.bytes_freed)}",
        f"detail deleted: {_days(result.deleted_detail)}",
        f"summaries deleted: {_days(result.deleted_summaries)}",
        f"summarised: {_days(result.summarized)}; compacted: {_days(result.compacted)}",
    ]
    lines += [f"kept {day}: {html.escape(why)}" for day, why in sorted(result.blocked.items())]
    lines += [
        f"problem on {day}: {html.escape(why)}" for day, why in sorted(result.problems.items())
    ]
    return "<br>".join(lines)
