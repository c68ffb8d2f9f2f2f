"""perfnb in JupyterLab: the live dashboard, the load-test panel, the health board,
and freezing them into static HTML/PNG for sharing.

Importing this package is cheap; each widget module imports anywidget and
plotly when it is used.

>>> from perfnb.widgets import Dashboard, freeze_figures   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfnb.widgets.apps import DemoApp, Traffic
    from perfnb.widgets.dashboard import Dashboard
    from perfnb.widgets.freeze import Frozen, freeze_figures
    from perfnb.widgets.healthboard import HealthBoard
    from perfnb.widgets.lights import HealthRules
    from perfnb.widgets.loadpanel import LoadTestPanel

__all__ = [
    "Dashboard",
    "DemoApp",
    "Frozen",
    "HealthBoard",
    "HealthRules",
    "LoadTestPanel",
    "Traffic",
    "freeze_figures",
]

_WHERE = {
    "Dashboard": "perfnb.widgets.dashboard",
    "DemoApp": "perfnb.widgets.apps",
    "Traffic": "perfnb.widgets.apps",
    "Frozen": "perfnb.widgets.freeze",
    "freeze_figures": "perfnb.widgets.freeze",
    "HealthBoard": "perfnb.widgets.healthboard",
    "HealthRules": "perfnb.widgets.lights",
    "LoadTestPanel": "perfnb.widgets.loadpanel",
}


def __getattr__(name: str) -> Any:
    # lazy: `import perfnb.widgets` must not pull anywidget, ipywidgets and plotly in
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'perfnb.widgets' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
