import numpy as np

from lggseg.infer.postprocess import PostProcess, apply, clean_components


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
