"""The distribution ships every module: pyproject.toml lists each folder of Python code.

Setuptools only packs the packages it is told about, and with the package-dir mapping nothing
is discovered automatically. An editable install hides a missing entry (the source folder is on
the path), so a wheel or the Docker image would lack the code while every other test passes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_of_python_code_is_a_listed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.parent.relative_to(ROOT / folder)
            if "__pycache__" in relative.parts:
                continue
            found.add(".".join((name, *relative.parts)))
    assert sorted(found - listed) == [], "add these to [tool.setuptools] packages"
    assert sorted(listed - found) == [], "listed packages without code"
