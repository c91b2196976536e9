import numpy as np
import pytest
from scipy import ndimage

from lggseg.infer.postprocess import (
    CORE,
    PostProcess,
    apply,
    clean_components,
    clear_small_slices,
    fill_slice_holes,
    trim_unsure_ends,
)


def _two_blobs():
    mask = np.zeros((4, 20, 20), bool)
    mask[0:3, 2:10, 2:10] = True  # 192 voxels
    mask[3, 15:17, 15:17] = True  # 4 voxels
    return mask


def test_threshold():
    prob = np.array([[[0.2, 0.6]]], np.float32)
    assert apply(prob, PostProcess(threshold=0.5)).tolist() == [[[False, True]]]
    assert apply(prob, PostProcess(threshold=0.1)).tolist() == [[[True, True]]]


def test_min_component_removes_small_blobs_only():
    out = clean_components(_two_blobs(), PostProcess(min_component=10))
    assert out.sum() == 192 and not out[3].any()


def test_keep_largest_and_noop():
    mask = _two_blobs()
    assert clean_components(mask, PostProcess(keep_largest=True)).sum() == 192
    assert clean_components(mask, PostProcess()) is mask


def test_components_connect_across_slices():
    mask = np.zeros((3, 5, 5), bool)
    mask[0, 2, 2] = mask[1, 2, 3] = mask[2, 3, 4] = True  # diagonal chain, 26-connected
    assert clean_components(mask, PostProcess(min_component=3)).sum() == 3


def test_size_rule_never_empties_a_volume_the_network_was_sure_about():
    """A small tumor predicted in fragments, each under min_component, survives if confident."""
    prob = np.zeros((10, 40, 40), np.float32)
    prob[1:4, 2:12, 2:12] = 0.99  # three fragments of 300 voxels, confident
    prob[5:8, 2:12, 20:30] = 0.97
    prob[1:4, 25:35, 25:35] = 0.7  # a faint one
    post = PostProcess(0.5, min_component=500)
    mask = apply(prob, post)
    assert mask.sum() == 600 and mask[2, 5, 5] and mask[6, 5, 25] and not mask[2, 30, 30]
    faint_only = np.where(prob > 0.9, 0.0, prob).astype(np.float32)
    assert not apply(faint_only, post).any()  # nothing confident: the rule stands
    prob[0:10, 15:25, 0:10] = 0.8  # a large component survives the rule: no guard needed
    mask = apply(prob, post)
    assert mask.sum() == 1000 and not mask[2, 5, 5]


def test_min_slice_area_clears_speck_slices_and_keeps_the_tumor_slices():
    mask = np.zeros((5, 30, 30), bool)
    mask[1:4, 5:20, 5:20] = True  # the tumor: 225 voxels on each of slices 1-3
    mask[0, 5:10, 5:10] = True  # a 25-voxel speck above it, touching it (one 3D component)
    mask[4, 25:27, 25:27] = True  # a 4-voxel speck on another slice
    out = clear_small_slices(mask, 30)
    assert out[1:4].sum() == 3 * 225 and not out[0].any() and not out[4].any()
    assert clear_small_slices(mask, 0) is mask
    # the slice rule runs before the component rules: the speck touching the tumor goes too
    assert clean_components(mask, PostProcess(min_component=100)).sum() == 3 * 225 + 25
    assert clean_components(mask, PostProcess(min_component=100, min_slice_area=30)).sum() == 3 * 225


def test_min_slice_area_never_empties_a_volume_the_network_was_sure_about():
    """A tiny tumor, a speck on every slice, stays when it is confident; a faint one goes."""
    prob = np.zeros((4, 20, 20), np.float32)
    prob[1:3, 5:8, 5:8] = 0.99  # 9 voxels on each of two slices
    post = PostProcess(0.5, min_slice_area=100)
    assert apply(prob, post).sum() == 18
    prob[1:3, 5:8, 5:8] = 0.8
    assert not apply(prob, post).any()


def test_min_extent_removes_blobs_confined_to_few_slices_and_keeps_the_tumor():
    prob = np.zeros((12, 40, 40), np.float32)
    prob[2:7, 5:20, 5:20] = 0.99  # the tumor: 5 slices of 225 voxels
    prob[9, 25:39, 25:39] = 0.999  # a confident 196-voxel blob on one slice
    prob[9:11, 2:12, 28:38] = 0.999  # a confident 200-voxel blob on two slices
    one = apply(prob, PostProcess(0.5, min_extent=2))
    assert one.sum() == 5 * 225 + 200 and not one[9, 30, 30]
    three = apply(prob, PostProcess(0.5, min_extent=3))
    assert three.sum() == 5 * 225 and three[2:7, 5:20, 5:20].all()
    assert apply(prob, PostProcess(0.5, min_extent=6)).sum() == 5 * 225 + 196 + 200  # all go: confident ones stay
    prob[prob > 0] = 0.8
    assert not apply(prob, PostProcess(0.5, min_extent=6)).any()  # nothing confident: the rule stands


def _tumor_with_unsure_ends() -> np.ndarray:
    """``(10, 40, 40)``: a tumor on slices 2-6, confident on 3-5, unsure (0.7) on its end slices 2 and 6."""
    prob = np.zeros((10, 40, 40), np.float32)
    prob[2:7, 5:25, 5:25] = 0.7  # 400 px a slice above threshold
    prob[3:6, 8:22, 8:22] = 0.97  # a 196-px confident core on slices 3-5
    prob[6, 10:14, 10:14] = 0.95  # 16 confident pixels on the bottom end slice
    return prob


def test_end_core_trims_unsure_end_slices_only():
    prob = _tumor_with_unsure_ends()
    mask = prob > 0.5
    trimmed = trim_unsure_ends(mask, prob, 100)
    assert trimmed.any((1, 2)).nonzero()[0].tolist() == [3, 4, 5]
    assert (trimmed[3:6] == mask[3:6]).all()  # the kept slices keep their unsure rim too
    assert trim_unsure_ends(mask, prob, 16).any((1, 2)).nonzero()[0].tolist() == [3, 4, 5, 6]  # 16 core px suffice
    assert trim_unsure_ends(mask, prob, 0) is mask
    assert mask[2].sum() == 400 and mask[6].sum() == 400  # the input is not modified


def test_end_core_stops_at_the_first_confident_slice_and_keeps_inner_unsure_slices():
    prob = _tumor_with_unsure_ends()
    prob[4, 8:22, 8:22] = 0.7  # the middle slice loses its core: it is not an end, so it stays
    assert trim_unsure_ends(prob > 0.5, prob, 100).any((1, 2)).nonzero()[0].tolist() == [3, 4, 5]


def test_end_core_never_removes_a_component_and_trims_each_component_on_its_own():
    prob = np.zeros((12, 40, 40), np.float32)
    prob[1:4, 2:12, 2:12] = 0.7  # a faint component: no slice has a confident core
    prob[5:10, 20:35, 20:35] = 0.99  # a confident one on slices 5-9 ...
    prob[9, 20:35, 20:35] = 0.6  # ... whose bottom slice is unsure
    trimmed = trim_unsure_ends(prob > 0.5, prob, 50)
    # the faint one is trimmed from the top down to its last slice, never removed
    assert trimmed[:, 2:12, 2:12].any((1, 2)).nonzero()[0].tolist() == [3]
    assert trimmed[:, 20:35, 20:35].any((1, 2)).nonzero()[0].tolist() == [5, 6, 7, 8]
    assert CORE == 0.9


def test_end_core_in_a_rule_needs_the_probabilities_and_runs_after_the_component_rules():
    prob = _tumor_with_unsure_ends()
    post = PostProcess(0.5, min_component=500, min_end_core=100)
    assert apply(prob, post).any((1, 2)).nonzero()[0].tolist() == [3, 4, 5]
    assert post.n_rules == 2
    with pytest.raises(ValueError, match="min_end_core needs the probability volume"):
        clean_components(prob > 0.5, post)


def _ring_slice() -> np.ndarray:
    """A ``(5, 30, 30)`` mask: on slice 2 a square ring (a rim around a dark cavity), 8 x 8 inside."""
    mask = np.zeros((5, 30, 30), bool)
    mask[2, 5:20, 5:20] = True
    mask[2, 8:16, 8:16] = False
    return mask


def test_fill_slice_holes_fills_an_enclosed_cavity_and_nothing_open():
    mask = _ring_slice()
    mask[2, 0:4, 25:30] = True  # an open notch touching the border: stays as it is
    filled = fill_slice_holes(mask)
    assert filled[2, 8:16, 8:16].all()
    assert filled.sum() == mask.sum() + 64
    assert not filled[2, 4:25, 20:30].any()
    assert not mask[2, 8:16, 8:16].any()  # the input is not modified


def test_fill_slice_holes_works_slice_by_slice():
    mask = np.zeros((3, 20, 20), bool)
    mask[:, 4:16, 4:16] = True
    mask[:, 7:13, 7:13] = False  # a tube through every slice: enclosed on each slice, open in 3D
    assert not ndimage.binary_fill_holes(mask)[1, 7:13, 7:13].any()  # a 3D fill leaves it open
    filled = fill_slice_holes(mask)
    assert filled[:, 4:16, 4:16].all() and filled.sum() == 3 * 12 * 12


def test_fill_slice_holes_agrees_with_scipy_on_each_slice():
    rng = np.random.default_rng(0)
    for density in (0.3, 0.5, 0.7):
        mask = rng.random((6, 24, 31)) < density
        expected = np.stack([ndimage.binary_fill_holes(plane) for plane in mask])
        assert (fill_slice_holes(mask) == expected).all()
        assert expected.sum() > mask.sum()  # the random masks do enclose holes


def test_fill_holes_in_a_rule_runs_last_and_adds_no_false_positive_slice():
    prob = np.where(_ring_slice(), 0.98, 0.02).astype(np.float32)
    prob[4, 0:2, 0:2] = 0.97  # a 4-voxel speck: removed by the component rule, not filled back
    post = PostProcess(0.5, min_component=100, fill_holes=True)
    mask = apply(prob, post)
    assert mask[2, 5:20, 5:20].all() and mask.sum() == 15 * 15
    assert post.n_rules == 2 and PostProcess(0.5, fill_holes=True).n_rules == 1
    assert not apply(prob, PostProcess(0.5, min_component=100))[2, 8:16, 8:16].any()
