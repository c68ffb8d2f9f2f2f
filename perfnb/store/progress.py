"""Progress of long store jobs: a callback, a bar on a terminal, or a notebook widget.

``progress=`` options of the store's long jobs (exports) take one of:

- ``None``: show progress where someone is watching — an ipywidgets
  ``IntProgress`` in a Jupyter kernel, a one-line bar when stderr is a terminal,
  nothing otherwise;
- ``True``: always show it (the widget in a kernel, else the bar on stderr);
- ``False``: never;
- a callable, called as ``callback(done, total)``: once with ``done = 0``, then
  with each increase of ``done``.

Finding out whether a kernel is running imports nothing: ipywidgets is only
imported when a widget is about to be shown.

>>> seen = []
>>> report = progress_reporter(lambda done, total: seen.append((done, total)), total=10,
...                            label="demo")
>>> report(4); report(4); report(10); report.close()
>>> seen
[(0, 10), (4, 10), (10, 10)]
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from perfnb.errors import ConfigError

__all__ = ["Progress", "progress_reporter"]

#: ``None`` (show where watched), ``True`` (always show), ``False`` or ``callback(done, total)``.
Progress = bool | Callable[[int, int], None] | None


class _Reporter:
    """Progress of one export: ``report(done)`` as rows are scanned, ``close()`` at the end."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        if callback is not None:
            callback(0, total)

    def __call__(self, done: int) -> None:
        if done > self.done:
            self.done = done
            if self.callback is not None:
                self.callback(done, self.total)

    def close(self) -> None:
        """Nothing to finish for a callback."""


class _Bar(_Reporter):
    """A one-line bar redrawn in place on a text stream, at most every 0.1 s."""

    def __init__(self, stream: IO[str], total: int, label: str) -> None:
        super().__init__(None, total)
        self.stream, self.label, self.shown = stream, label, -1.0
        self._draw()

    def __call__(self, done: int) -> None:
        super().__call__(done)
        if time.monotonic() - self.shown >= 0.1:
            self._draw()

    def _draw(self) -> None:
        self.shown = time.monotonic()
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {share:4.0%} {self.done:,}/{self.total:,} rows"
        )
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class _Widget(_Reporter):
    """An ipywidgets ``IntProgress`` shown in the notebook, updated at most every 0.2 s."""

    def __init__(self, widget: Any, total: int) -> None:
        super().__init__(None, total)
        self.widget, self.shown = widget, time.monotonic()

    def __call__(self, done: int) -> None:
        super().__call__(done)
        if time.monotonic() - self.shown >= 0.2:
            self.shown = time.monotonic()
            self.widget.value = self.done

    def close(self) -> None:
        self.widget.value = self.done
        self.widget.bar_style = "success" if self.done >= self.total else "warning"


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel; imports nothing to find out."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _widget(total: int, label: str) -> _Reporter | None:
    try:
        # Imported by name: ipywidgets ships no types, and only a notebook needs it.
        widgets: Any = importlib.import_module("ipywidgets")
        shown: Any = importlib.import_module("IPython.display")
    except ImportError:
        return None
    bar = widgets.IntProgress(value=0, min=0, max=max(total, 1), description=label[:20])
    shown.display(bar)
    return _Widget(bar, total)


def progress_reporter(progress: Progress, *, total: int, label: str) -> _Reporter:
    """The reporter ``progress=`` asks for (see :func:`export_store`)."""
    if callable(progress):
        return _Reporter(progress, total)
    if progress is False:
        return _Reporter(None, total)
    if progress is not None and progress is not True:
        # Guards callers that bypass the type checker (notebooks).
        msg = f"progress: got {progress!r}; expected None, True, False or callable(done, total)"  # type: ignore[unreachable]
        raise ConfigError(msg)
    if _in_kernel():
        widget = _widget(total, label)
        if widget is not None:
            return widget
    if progress is True or sys.stderr.isatty():
        return _Bar(sys.stderr, total, label)
    return _Reporter(None, total)
