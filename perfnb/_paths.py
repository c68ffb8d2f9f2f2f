"""Where the shipped notebooks are: beside the package in a checkout, inside it in a wheel.

>>> notebooks_dir().name
'notebooks'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["notebooks_dir"]

_PACKAGE = Path(__file__).resolve().parent


def notebooks_dir() -> Path:
    """The folder holding ``01_live_dashboard.ipynb`` and the others.

    A wheel carries them as ``perfnb/notebooks`` (see ``pyproject.toml``); a
    checkout or an editable install has them at the repository's top level.
    """
    inside = _PACKAGE / "notebooks"
    return inside if inside.is_dir() else _PACKAGE.parent / "notebooks"
