"""The matplotlib figures: no overlapping titles, every tumor slice (or "N of M shown"), integer ticks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lggseg.evaluation import figures


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the module saves (still written, so the files are checked too)."""
    kept: list[Any] = []
    save = figures._save

    def keep(fig: Any, path: str | Path) -> None:
        fig.canvas.draw()
        fig.lggseg_renderer = fig.canvas.get_renderer()  # kept: closing the figure drops the canvas
        kept.append(fig)
        save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def _volume(n: int, tumor: range, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    truth = np.zeros((n, size, size), bool)
    for z in tumor:
        truth[z, 20:40, 20:40] = True
    pred = np.roll(truth, 3, axis=2)
    return images, pred, truth


def _boxes(fig: Any) -> tuple[list[Any], list[Any]]:
    renderer = fig.lggseg_renderer
    titled = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.title.get_window_extent(renderer) for ax in titled]
    images = [ax.images[0].get_window_extent(renderer) for ax in titled]
    return titles, images


def test_overlay_grid_titles_do_not_overlap_the_images(captured: list[Any], tmp_path: Path) -> None:
    images, pred, truth = _volume(6, range(6))
    cases = [
        (f"worst: TCGA_XX_{i:04d}_20000101 slice {i + 1}  Dice 0.{i}5", images[i], truth[i], pred[i]) for i in range(6)
    ]
    figures.overlay_grid(cases, tmp_path / "overlays.png")
    assert (tmp_path / "overlays.png").stat().st_size > 10_000
    titles, boxes = _boxes(captured[0])
    assert len(titles) == 6
    for i, title in enumerate(titles):
        for j, box in enumerate(boxes):
            assert not title.overlaps(box), (i, j)  # the bug: row 2's titles hidden under row 1's images
        for k, other in enumerate(titles):
            assert k == i or not title.overlaps(other)


@pytest.mark.parametrize(
    ("tumor", "shown", "phrase"), [(range(3, 12), 9, "all 9 slices"), (range(0, 30), 24, "24 of 30")]
)
def test_patient_summary_shows_every_tumor_slice_or_says_how_many(
    captured: list[Any], tmp_path: Path, tumor: range, shown: int, phrase: str
) -> None:
    images, pred, truth = _volume(34, tumor)
    figures.patient_summary("P", images, pred, truth, tmp_path / "summary.png", dice=0.8)
    fig = captured[0]
    montage = [ax for ax in fig.axes if ax.get_title().startswith("slice ")]
    assert len(montage) == shown
    numbers = [int(ax.get_title().split()[1].rstrip(":")) for ax in montage]
    assert numbers[0] == tumor[0] + 1 and numbers[-1] == tumor[-1] + 1
    assert phrase in fig._suptitle.get_text()
    titles, boxes = _boxes(fig)
    assert not any(t.overlaps(b) for t in titles for b in boxes)
    plot = [ax for ax in fig.axes if ax.get_xlabel() == "slice"][0]
    ticks = [t for t in plot.get_xticks() if plot.get_xlim()[0] <= t <= plot.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_montage_slices() -> None:
    assert figures.montage_slices(np.array([0, 5, 0, 7]), np.array([0, 0, 3, 0])).tolist() == [1, 2, 3]
    assert figures.montage_slices(np.zeros(5), None).tolist() == [0, 1, 2, 3, 4]
    many = figures.montage_slices(np.ones(100), None, limit=10)
    assert len(many) == 10 and many[0] == 0 and many[-1] == 99


def test_training_curves_have_integer_epoch_ticks(captured: list[Any], tmp_path: Path) -> None:
    history = [
        {"epoch": e, **{f"{s}_{k}": 0.5 + 0.1 * e for s in ("train", "val") for k in ("loss", "dice", "iou")}}
        for e in (1, 2, 3)
    ]
    figures.training_curves(history, tmp_path / "curves.png")
    for ax in captured[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
