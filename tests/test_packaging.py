"""The files the package needs at run time are declared as package data, so a wheel carries them."""

import glob
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"lggseg.model": "weights", "lggseg.data": "sample"}  # folders whose every file must ship


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from Python 3.11")
@pytest.mark.parametrize("package, folder", sorted(PACKAGE_DIRS.items()))
def test_every_file_of_a_runtime_folder_is_package_data(package, folder):
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][package]
    package_dir = ROOT / "src" / Path(*package.split("."))
    declared = {
        Path(match)
        for pattern in patterns
        for match in glob.glob(pattern, root_dir=package_dir, recursive=True)
        if (package_dir / match).is_file()
    }
    present = {p.relative_to(package_dir) for p in (package_dir / folder).rglob("*") if p.is_file()}
    assert present, f"{package_dir / folder} holds no files"
    assert present <= declared, f"not declared as package data: {sorted(map(str, present - declared))}"
