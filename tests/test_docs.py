"""The documentation's links resolve, and the docs index quotes its result folders' metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    targets = [t for t in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in t]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_docs_index_quotes_each_folders_metrics() -> None:
    """Each row of docs/README.md with an out-of-fold score matches that folder's metrics.json."""
    rows = 0
    for line in (ROOT / "docs" / "README.md").read_text(encoding="utf-8").splitlines():
        folder = re.search(r"^\| \[?`?(cv[\w]*)/", line)
        score = re.search(r"(\d\.\d{3}) / (\d\.\d{3}) / (\d\.\d{3}), FP (\d+\.\d)%", line)
        if not (folder and score):
            continue
        metrics = json.loads((ROOT / "docs" / folder.group(1) / "metrics.json").read_text())
        assert metrics["n_patients"] == 100
        quoted = [float(x) for x in score.groups()]
        actual = [metrics["mean_dice"], metrics["median_dice"], metrics["min_dice"]]
        assert quoted[:3] == [round(x, 3) for x in actual], line
        assert quoted[3] == round(100 * metrics["false_positive_rate_empty_slices"], 1), line
        rows += 1
    assert rows == 11  # cv, cv_v2, cv_v4, cv_v5, cv_v3s43, cv_v3swa, cv_v3c224, cv_v7, cv_v7s43, cv_v3ends, cv_v3refit
