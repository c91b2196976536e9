"""Shared fixtures: the bundled real sample, a tiny kaggle_3m-style folder, and the full data set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lggseg.data.bundled import sample_root

FULL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lgg" / "kaggle_3m"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled real sample: 2 fold-0 patients in kaggle_3m layout (read-only)."""
    return sample_root()


@pytest.fixture()
def tiny_dataset(tmp_path: Path, sample_dir: Path) -> Path:
    """A writable copy of the sample: ``tmp/kaggle_3m/<patient>/...`` (2 patients, 40 slices)."""
    target = tmp_path / "kaggle_3m"
    shutil.copytree(sample_dir, target)
    return target


@pytest.fixture(scope="session")
def full_data() -> Path:
    """The full 100-patient data set next to the repository; skips when it is absent."""
    if not FULL_DATA.is_dir():
        pytest.skip(f"needs the full LGG data set at {FULL_DATA} (absent in a fresh clone)")
    return FULL_DATA


@pytest.fixture(scope="session")
def shipped_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model exported to ONNX through ``lggseg export``, once per test session."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from lggseg.commands.cli import main

    path = tmp_path_factory.mktemp("export") / "lggseg_unet.onnx"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--format", "onnx", "--out", str(path)])
    assert exc.value.code == 0
    return path


@pytest.fixture(scope="session")
def sample_patient(sample_dir: Path) -> Path:
    return sorted(p for p in sample_dir.iterdir() if p.is_dir())[0]


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
