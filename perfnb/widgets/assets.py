"""The widgets' static files, plotly.js among them, shipped inside the package.

``static/plotly-basic.min.js`` is the ``plotly.js-basic-dist-min`` build from npm
(scatter, bar and pie traces: all perfnb's charts use), pinned to the plotly.js
version that the ``plotly`` Python package writes figures for. It is vendored so
that charts paint offline; ``python -m perfnb.widgets.assets --update`` fetches
it again with npm after the plotly Python package moves to a new plotly.js.
When the file is missing, the full bundle inside the ``plotly`` package serves.

>>> source, version = plotly_js()
>>> len(source) > 100_000, version.count(".")
(True, 2)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["STATIC", "plotly_js", "plotly_js_version", "python_plotly_js_version"]

STATIC: Final = Path(__file__).parent / "static"
VENDORED: Final = STATIC / "plotly-basic.min.js"
NPM_PACKAGE: Final = "plotly.js-basic-dist-min"

_VERSION = re.compile(rb"plotly\.js[^\n]*?v(\d+\.\d+\.\d+)")


def _version_of(source: bytes) -> str:
    match = _VERSION.search(source[:400])
    return match.group(1).decode() if match else "unknown"


def python_plotly_js_version() -> str:
    """The plotly.js version the installed ``plotly`` Python package targets."""
    from plotly.offline import get_plotlyjs_version  # type: ignore[import-untyped]

    version: str = get_plotlyjs_version()
    return version


def plotly_js() -> tuple[bytes, str]:
    """plotly.js source to load into the page, and its version."""
    if VENDORED.is_file():
        source = VENDORED.read_bytes()
    else:
        from plotly.offline import get_plotlyjs

        source = get_plotlyjs().encode()
    return source, _version_of(source)


def plotly_js_version() -> str:
    """The version of the plotly.js that :func:`plotly_js` serves."""
    return plotly_js()[1]


def _update() -> int:
    version = python_plotly_js_version()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"{NPM_PACKAGE}@{version}", "--silent"],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        shutil.copyfile(Path(tmp) / "package" / "plotly-basic.min.js", VENDORED)
        shutil.copyfile(Path(tmp) / "package" / "LICENSE", STATIC / "plotly-basic.LICENSE")
    print(f"vendored {NPM_PACKAGE} {version} into {VENDORED}")
    return 0


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["--update"]:
        print("usage: python -m perfnb.widgets.assets --update", file=sys.stderr)
        return 2
    return _update()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
