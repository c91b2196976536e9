"""Overlays for people: Okabe-Ito colours, error colouring, labels, probability PNGs, sortable names."""

from __future__ import annotations

import numpy as np
import pytest

from lggseg.evaluation import render


def _image(size: int = 160) -> np.ndarray:
    ramp = np.tile(np.linspace(20, 120, size).astype(np.uint8), (size, 1))
    return np.stack([ramp // 2, ramp, ramp // 3], axis=-1)  # FLAIR is channel 1


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _near(rgb: np.ndarray, color: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` of ``color`` in every channel (text is anti-aliased)."""
    return int((np.abs(rgb.astype(int) - np.array(color)) <= tolerance).all(-1).sum())


def test_palette_is_okabe_ito() -> None:
    assert render.PRED_COLOR == (213, 94, 0)  # vermillion
    assert render.TRUTH_COLOR == (86, 180, 233)  # sky blue
    assert render.AGREE_COLOR == (240, 228, 66)  # yellow


def test_overlay_draws_both_outlines_on_the_flair_channel() -> None:
    image = _image()
    pred, truth = _square(160, 60, 60, 30), _square(160, 70, 70, 30)
    rgb = render.overlay(image, pred, truth)
    assert tuple(rgb[60, 75]) == render.PRED_COLOR and tuple(rgb[99, 85]) == render.TRUTH_COLOR
    assert tuple(rgb[75, 75]) == (image[75, 75, 1],) * 3  # inside: the FLAIR value, grey
    assert int((rgb == render.PRED_COLOR).all(-1).sum()) == render.outline(pred).sum()


def test_error_overlay_colours_tp_fp_fn() -> None:
    image = _image()
    pred, truth = _square(160, 40, 40, 20), _square(160, 50, 50, 20)
    rgb = render.error_overlay(image, pred, truth, alpha=1.0)
    assert tuple(rgb[55, 55]) == render.AGREE_COLOR  # both
    assert tuple(rgb[42, 42]) == render.PRED_COLOR  # predicted only: false positive
    assert tuple(rgb[65, 65]) == render.TRUTH_COLOR  # missed: false negative
    assert tuple(rgb[100, 100]) == (image[100, 100, 1],) * 3
    half = render.error_overlay(image, pred, truth, alpha=0.5)
    grey = int(image[42, 42, 1])
    assert tuple(half[42, 42]) == tuple(round((grey + c) / 2) for c in render.PRED_COLOR)


def test_probability_image_scales_and_clips() -> None:
    prob = np.array([[0.0, 0.5, 1.0, np.nan, 1.7, -0.2]], np.float32)
    assert render.probability_image(prob).tolist() == [[0, 128, 255, 0, 255, 0]]


def test_labelled_overlay_names_each_outline() -> None:
    image = _image(256)
    pred, truth = _square(256, 120, 120, 40), _square(256, 125, 125, 40)
    plain = render.overlay(image, pred, truth)
    labelled = render.labelled_overlay(image, pred, truth, "TCGA_CS_4944_20010208_12")
    box = labelled[:48, :150]
    assert _near(box, render.PRED_COLOR) > 20 and _near(box, render.TRUTH_COLOR) > 20
    assert _near(box, (255, 255, 255)) > 20  # the title
    assert np.array_equal(labelled[60:], plain[60:])  # the label stays in its corner
    no_truth = render.labelled_overlay(image, pred)
    assert _near(no_truth[:48, :150], render.TRUTH_COLOR) == 0
    small = _image(64)
    assert np.array_equal(render.labelled_overlay(small, pred[:64, :64]), render.overlay(small, pred[:64, :64]))


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["P_1", "P_10", "P_2"], ["P_01", "P_10", "P_02"]),
        (["vol_9", "vol_100"], ["vol_009", "vol_100"]),
        (["odd", "P_3"], ["odd", "P_3"]),
        ([], []),
    ],
)
def test_padded_names_sort_in_slice_order(names: list[str], expected: list[str]) -> None:
    padded = render.padded_names(names)
    assert padded == expected
    numbered = [n for n in names if n[-1].isdigit()]
    by_number = sorted(numbered, key=lambda n: int(n.rsplit("_", 1)[1]))
    assert sorted(p for p, n in zip(padded, names) if n in numbered) == render.padded_names(by_number)
