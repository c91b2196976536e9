import numpy as np
import torch

from lggseg.transforms import AugmentConfig, augment, normalize, volume_stats


def test_volume_stats_and_normalize_zscore_the_head():
    rng = np.random.default_rng(0)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 8:24, 8:24] = rng.integers(50, 200, (4, 16, 16, 3))
    stats = volume_stats(images)
    assert stats.shape == (4, 3)
    x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(stats))
    head = x[:, :, 8:24, 8:24]
    assert abs(float(head.mean())) < 0.1 and abs(float(head.std()) - 1) < 0.1


def test_augment_moves_image_and_mask_together():
    images = torch.zeros(8, 3, 64, 64)
    images[:, :, 20:40, 10:30] = 200
    masks = (images[:, :1] > 0).float()
    stats = torch.tensor([[0.0, 255.0, 100.0, 50.0]] * 3).T.expand(8, 4, 3).contiguous()
    cfg = AugmentConfig(intensity_prob=0.0, noise_std=0.0)
    x, y = augment(images, masks, stats, cfg, torch.Generator().manual_seed(0))
    bright = x[:, 0] > 0
    agreement = (bright == (y[:, 0] > 0.5)).float().mean()
    assert agreement > 0.97
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_augment_is_reproducible_with_the_same_seed():
    images = torch.rand(4, 3, 32, 32) * 255
    masks = (torch.rand(4, 1, 32, 32) > 0.8).float()
    stats = torch.tensor([[0.0, 255.0, 128.0, 60.0]] * 3).T.expand(4, 4, 3).contiguous()
    a = augment(images, masks, stats, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(images, masks, stats, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
