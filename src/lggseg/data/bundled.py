"""The real sample shipped inside the package: two patients in kaggle_3m layout (canonical fold 0), held out
by the shipped final model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_root() -> Path:
    """Folder of the bundled sample (kaggle_3m layout; see ``sample/README.md`` for license and citation)."""
    return Path(str(resources.files("lggseg.data").joinpath("sample").joinpath("kaggle_3m")))
