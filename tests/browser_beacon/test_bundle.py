"""The shipped bundle: within its size budget, built from the repository's own sources."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from perfnb.server.beaconjs import beacon_source

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
#: The issue's budget: the bundle as a browser downloads it, gzip-compressed.
BUDGET_GZIP_BYTES = 10 * 1024


def test_bundle_fits_the_size_budget() -> None:
    size = len(gzip.compress(beacon_source(), compresslevel=9))
    assert size <= BUDGET_GZIP_BYTES, f"beacon.js is {size} bytes gzipped"


def test_bundle_ships_inside_the_package_and_names_its_sources() -> None:
    source = beacon_source().decode("utf-8")
    assert source.startswith("/*! perfnb beacon, built from js/src")
    assert re.search(r"includes web-vitals \d+\.\d+\.\d+ \(Apache-2\.0", source)


def test_sources_start_no_timer_of_their_own() -> None:
    # The beacon works on events, idle callbacks and the app's own requests; the
    # one loop it has (frame sampling) runs on requestAnimationFrame while asked.
    for path in sorted((JS / "src").glob("*.js")):
        code = path.read_text(encoding="utf-8")
        for name in ("setInterval", "setTimeout"):
            assert name not in code, f"{path.name} uses {name}"


@pytest.mark.slow
def test_committed_bundle_matches_a_fresh_build(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm is not installed: the committed bundle cannot be rebuilt here")
    work = tmp_path / "js"
    work.mkdir()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        shutil.copy2(JS / name, work / name)
    shutil.copytree(JS / "src", work / "src")
    install = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    built = subprocess.run(
        [node, "build.mjs", "--stdout"],
        cwd=work,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr.decode(errors="replace")[-2000:]
    assert built.stdout == beacon_source(), (
        "perfnb/server/static/beacon.js differs from a fresh build: run `npm ci && npm run build`"
        " in js/"
    )
