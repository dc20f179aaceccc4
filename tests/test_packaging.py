"""pyproject.toml lists the packages by hand (the CLI installs from cli/ as doll_cli):
a new folder under doll/ that is not listed would be missing from a non-editable install."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "doll").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found - {"doll_cli"} == set(), "listed in pyproject.toml but not a package folder"
    assert config["package-dir"]["doll_cli"] == "cli" and (ROOT / "cli" / "__init__.py").is_file()
