"""What perfnb's chart widgets share: their ESM source, and plotly.js on request.

A widget's ESM is its ``static/<name>.js`` with the shared pieces inlined:
``static/plotly-loader.js`` where it says ``/* __PLOTLY_LOADER__ */`` and
``static/dom.js`` (the ``h()`` element builder) where it says
``/* __PERFNB_DOM__ */``; it is read when the first widget is made, not at
import. The browser asks the kernel for plotly.js once per page (a ``hello``
message with ``plotly: true``) and the kernel answers with the source as a
binary buffer, so a page with many widgets loads it once.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

import anywidget
import traitlets

from perfnb.widgets import _protocols as p
from perfnb.widgets.assets import STATIC, plotly_js

__all__ = ["ChartWidget", "LazyEsm", "LazyFile", "esm_source"]


@cache
def esm_source(name: str) -> str:
    """``static/<name>.js`` with the shared pieces (plotly loader, ``h()``) inlined."""
    source = (STATIC / f"{name}.js").read_text(encoding="utf-8")
    for marker, piece in (("__PLOTLY_LOADER__", "plotly-loader.js"), ("__PERFNB_DOM__", "dom.js")):
        source = source.replace(f"/* {marker} */", (STATIC / piece).read_text(encoding="utf-8"))
    return source


class LazyEsm:
    """An ``_esm`` class attribute read from the package's files when first used."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return esm_source(self.name)


class LazyFile:
    """A ``_css`` class attribute read from ``static/`` when first used."""

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def __str__(self) -> str:
        return _read_static(self.filename)


@cache
def _read_static(filename: str) -> str:
    return (STATIC / filename).read_text(encoding="utf-8")


@cache
def _plotly_payload() -> tuple[bytes, str]:
    return plotly_js()


class ChartWidget(anywidget.AnyWidget):
    """Base of perfnb widgets that draw Plotly charts in the browser."""

    _css = LazyFile("widgets.css")
    title = traitlets.Unicode("perfnb").tag(sync=True)
    # the browser keys a widget's state by this (anywidget proxies the model per view)
    _uid = traitlets.Unicode().tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_uid=uuid.uuid4().hex, **kwargs)
        self.hellos = 0
        self.on_msg(self._on_custom_msg)

    def _on_custom_msg(self, _widget: object, content: Any, _buffers: object) -> None:
        if not isinstance(content, dict) or content.get("type") != "hello":
            return
        self.hellos += 1
        if content.get("plotly"):
            source, version = _plotly_payload()
            msg: p.PlotlyMsg = {"type": "plotly", "version": version}
            self.send(msg, buffers=[source])
        self._on_hello()

    def _on_hello(self) -> None:
        """A view rendered: send it everything it needs to draw."""
