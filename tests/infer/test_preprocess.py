import numpy as np
import torch

from lggseg.infer.preprocess import normalize, volume_stats


def test_volume_stats_and_normalize_zscore_the_head():
    rng = np.random.default_rng(0)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 8:24, 8:24] = rng.integers(50, 200, (4, 16, 16, 3))
    stats = volume_stats(images)
    assert stats.shape == (4, 3)
    x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(stats))
    head = x[:, :, 8:24, 8:24]
    assert abs(float(head.mean())) < 0.1 and abs(float(head.std()) - 1) < 0.1


def test_inference_does_not_import_training_code():
    import subprocess
    import sys

    code = (
        "import sys, lggseg.infer.segmenter; bad = [m for m in sys.modules if m.startswith('lggseg.train')]; assert "
        "not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_context_stack_puts_each_slice_between_its_clamped_neighbours():
    from lggseg.infer.preprocess import context_indices, context_stack, tile_stats

    assert context_indices(np.arange(4), 4, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    images = np.stack([np.full((2, 2, 3), 10 * z + np.arange(3), np.uint8) for z in range(4)])  # value 10z + channel
    x = context_stack(images, 1, 9, context=1)  # a stop past the end is cut, like a slice
    assert x.shape == (3, 9, 2, 2)
    # slice 1: channels of slices 0, 1, 2; slice 3 (the last): 2, 3, 3
    assert x[0, :, 0, 0].tolist() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert x[2, :, 0, 0].tolist() == [20, 21, 22, 30, 31, 32, 30, 31, 32]
    assert torch.equal(context_stack(images, 0, 2, context=0), torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float())
    stats = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(tile_stats(stats, 1), torch.cat([stats] * 3, dim=1))
    assert tile_stats(stats[None].expand(5, 4, 3), 2).shape == (5, 4, 15)


def test_volume_batches_cover_the_volume_once_normalised_with_its_own_stats():
    from lggseg.infer.preprocess import context_stack, tile_stats, volume_batches

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (7, 8, 8, 3), dtype=np.uint8)
    stats = tile_stats(torch.from_numpy(volume_stats(images)), 1)
    batches = list(volume_batches(images, context=1, batch_size=3))
    assert [start for start, _ in batches] == [0, 3, 6]
    assert [x.shape for _, x in batches] == [(3, 9, 8, 8), (3, 9, 8, 8), (1, 9, 8, 8)]
    whole = torch.cat([x for _, x in batches])
    assert torch.equal(whole, normalize(context_stack(images, 0, 7, 1), stats))
    given = np.tile(np.array([[0], [255], [100], [50]], np.float32), (1, 3))
    (_, x), *_ = volume_batches(images, context=0, batch_size=7, stats=given)
    assert torch.equal(x, normalize(context_stack(images, 0, 7, 0), torch.from_numpy(given)))


def test_volume_midline_is_the_heads_centre_on_the_half_pixel_grid():
    from lggseg.infer.preprocess import volume_midline

    images = np.zeros((3, 16, 32, 3), np.uint8)
    images[:, 4:12, 6:17, 1] = 200  # head over columns 6..16: centre 11
    assert volume_midline(images) == 11.0
    images[:, 4:12, 17, 1] = 200  # columns 6..17: centre 11.5, a half pixel
    assert volume_midline(images) == 11.5
    assert volume_midline(np.zeros((2, 16, 32, 3), np.uint8)) == 15.5  # no head: the image's centre


def test_mirror_channels_show_each_pixel_its_contralateral_twin():
    from lggseg.infer.preprocess import mirror_channels, volume_batches

    x = torch.arange(6.0).reshape(1, 1, 1, 6).expand(2, 3, 1, 6)  # column index as the value
    mirrored = mirror_channels(x, midline=2.0)  # column c shows column 4 - c
    assert mirrored.shape == (2, 6, 1, 6)
    assert torch.equal(mirrored[:, :3], x)
    assert mirrored[0, 3, 0].tolist() == [4, 3, 2, 1, 0, 0]  # column 5 mirrors to -1: outside, background
    assert mirror_channels(x, midline=2.5)[0, 5, 0].tolist() == [5, 4, 3, 2, 1, 0]
    # a lesion on one side: the plain channels show it there, the mirrored ones on the other side
    images = np.zeros((3, 8, 16, 3), np.uint8)
    images[:, 1:7, 2:14] = 100  # head over columns 2..13: midline 7.5
    images[:, 3:5, 3:5, :] = 250  # bright on the left
    ((_, net_input),) = volume_batches(images, 1, 3, mirror=True)
    assert net_input.shape == (3, 18, 8, 16)
    flair, flair_mirrored = net_input[1, 4], net_input[1, 13]  # centre slice's FLAIR, plain and mirrored
    assert float(flair[3, 3]) > float(flair[3, 12]) + 1  # the lesion at column 3 ...
    assert float(flair_mirrored[3, 12]) == float(flair[3, 3])  # ... is shown at its twin, column 15 - 3


def test_mirror_models_need_twice_the_channels():
    import pytest

    from lggseg.model.unet import UNetConfig

    assert UNetConfig(in_channels=18, context_slices=1, mirror=True).lggseg_channels == 18
    assert UNetConfig(in_channels=6, mirror=True).lggseg_channels == 6
    with pytest.raises(ValueError, match="needs in_channels 18"):
        UNetConfig(in_channels=9, context_slices=1, mirror=True)


def test_volume_batches_with_mirror_equal_normalising_the_raw_mirrored_stack_bit_for_bit():
    from lggseg.infer.preprocess import context_stack, mirror_channels, volume_batches, volume_midline, volume_stats

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (7, 12, 20, 3), dtype=np.uint8)
    images[..., :6, :] = 0  # head off-centre: mirrored columns fall outside the image
    midline = volume_midline(images)
    assert midline == 12.5  # head over columns 6..19: columns 0..5 mirror to 25..20, outside the image
    stats = torch.from_numpy(volume_stats(images)).repeat(1, 3 * 2)  # (4, 18)
    expected = normalize(mirror_channels(context_stack(images, 0, 7, 1), midline), stats)
    got = torch.cat([x for _, x in volume_batches(images, context=1, batch_size=3, mirror=True)])
    assert got.shape == (7, 18, 12, 20)
    assert torch.equal(got, expected)
    assert float(expected[0, 9, 0, 0]) == float(
        normalize(torch.zeros(1, 1, 1, 1), stats[:, :1])[0, 0, 0, 0]
    )  # outside: raw 0
