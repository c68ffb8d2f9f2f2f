"""The packaging agrees with itself: environment.yml mirrors pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_NAMES = {"python-duckdb": "duckdb", "python-kaleido": "kaleido"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=\[ ;]", requirement.strip(), maxsplit=1)[0].lower()
    return CONDA_NAMES.get(name, name)


def test_environment_yml_lists_every_runtime_dependency_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("server", "widgets"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    assert wanted <= conda, f"missing from environment.yml: {sorted(wanted - conda)}"
    assert conda - wanted <= {"python", "pip"}, sorted(conda - wanted - {"python", "pip"})
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip_part


def test_python_floor_agrees() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert project["requires-python"] == ">=3.11"
    assert "python>=3.11" in env["dependencies"]
