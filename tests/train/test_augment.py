import pytest
import torch

from lggseg.train.augment import AugmentConfig, augment, bias_field, choose_windows, gamma_curve

PLAIN = AugmentConfig(flip_prob=0, affine_prob=0, intensity_prob=0, noise_std=0)  # normalisation only


def _stats(b: int, mean: float = 100.0, std: float = 50.0) -> torch.Tensor:
    return torch.tensor([[0.0, 255.0, mean, std]] * 3).T.expand(b, 4, 3).contiguous()


def _blob_batch(b: int = 8, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose channel 0 equals the mask (255 inside an off-centre rectangle, 0 elsewhere)."""
    masks = torch.zeros(b, 1, size, size)
    masks[:, :, 20:40, 10:30] = 1.0
    images = torch.zeros(b, 3, size, size)
    images[:, 0] = masks[:, 0] * 255
    images[:, 1:] = 120.0  # the other channels: uniform "tissue"
    return images, masks


def test_augment_moves_image_and_mask_together():
    images, masks = _blob_batch()
    cfg = AugmentConfig(intensity_prob=0.0, noise_std=0.0)
    x, y = augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(0))
    assert x.shape == images.shape and y.shape == masks.shape
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    # channel 0 was the mask: after the same geometric transform it still marks the mask's pixels
    bright = x[:, 0] > 0
    agreement = (bright == (y[:, 0] > 0.5)).float().mean()
    assert agreement > 0.97
    # and the transform really moved things: the masks are no longer where they started
    assert not torch.equal(y, masks)


def test_augment_is_not_the_identity():
    images, masks = _blob_batch()
    stats = _stats(8)
    x, y = augment(images, masks, stats, AugmentConfig(), torch.Generator().manual_seed(1))
    from lggseg.infer.preprocess import normalize

    plain = normalize(images, stats)
    assert float((x - plain).abs().mean()) > 0.05  # intensity and geometry both change the image
    assert not torch.equal(y, masks)


def test_augment_is_reproducible_with_the_same_seed():
    images = torch.rand(4, 3, 32, 32) * 255
    masks = (torch.rand(4, 1, 32, 32) > 0.8).float()
    stats = torch.tensor([[0.0, 255.0, 128.0, 60.0]] * 3).T.expand(4, 4, 3).contiguous()
    a = augment(images, masks, stats, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(images, masks, stats, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gamma_curve_bends_contrast_and_keeps_background():
    images = torch.zeros(2, 3, 16, 16)
    images[:, :, 4:12, 4:12] = torch.linspace(10, 250, 64).reshape(8, 8)
    stats = _stats(2).clone()
    stats[:, 0] = 5.0  # lo
    unchanged = gamma_curve(images, stats, torch.ones(2, 3))
    assert torch.allclose(unchanged, images, atol=1e-3)
    bent = gamma_curve(images, stats, torch.full((2, 3), 1.5))
    inside = images[:, :, 4:12, 4:12]
    assert float((bent[:, :, 4:12, 4:12] - inside).abs().max()) > 5  # contrast changed
    assert float(bent[:, :, 4:12, 4:12].sub(inside).max()) <= 1e-3  # gamma > 1 darkens mid-tones, never brightens
    assert torch.equal(bent[:, :, :4], images[:, :, :4])  # background stays 0


def test_bias_field_is_smooth_multiplicative_and_identity_at_zero():
    assert torch.allclose(bias_field(torch.zeros(2, 3, 5), 32, 32), torch.ones(2, 3, 32, 32))
    field = bias_field(torch.full((2, 3, 5), 0.3), 64, 64)
    assert field.shape == (2, 3, 64, 64)
    assert bool((field > 0).all())
    spread = float(field.max() - field.min())
    assert spread > 0.1  # it changes the image
    assert float(field.diff(dim=-1).abs().max()) < 0.1 * spread  # smoothly: no neighbour jumps


def test_crops_keep_tumor_in_tumor_slices():
    images, masks = _blob_batch(b=6, size=128)
    masks[3:] = 0  # three tumor-free slices
    images[3:, 0] = 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = augment(images, masks, _stats(6), AugmentConfig(), generator, crop_size=48)
        assert x.shape == (6, 3, 48, 48) and y.shape == (6, 1, 48, 48)
        assert bool((y[:3].flatten(1).sum(1) > 0).all())  # every tumor slice's crop holds tumor
        assert float(y[3:].sum()) == 0


def test_a_crop_is_the_patch_of_the_whole_transformed_slice():
    """Warping only the patch's pixels gives the same pixels as warping the slice, then cropping."""
    images, masks = _blob_batch(b=8, size=64)
    images[:, 1] = torch.rand(8, 64, 64) * 200  # texture, so that a patch has one place only
    cfg = AugmentConfig(noise_std=0.0, gamma_prob=0.5, bias_field_prob=0.5)
    whole, whole_masks = augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(5))
    patches, patch_masks = augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(5), crop_size=24)
    for i in range(8):
        found = [
            (top, left)
            for top in range(41)
            for left in range(41)
            if torch.allclose(whole[i, :, top : top + 24, left : left + 24], patches[i], atol=1e-5)
        ]
        assert len(found) == 1, i
        top, left = found[0]
        assert torch.equal(whole_masks[i, :, top : top + 24, left : left + 24], patch_masks[i])


def test_a_crop_of_full_size_is_the_whole_slice():
    images, masks = _blob_batch(b=2, size=64)
    whole = augment(images, masks, _stats(2), AugmentConfig(), torch.Generator().manual_seed(0))
    same = augment(images, masks, _stats(2), AugmentConfig(), torch.Generator().manual_seed(0), crop_size=64)
    assert torch.equal(whole[0], same[0]) and torch.equal(whole[1], same[1])


def test_flair_only_samples_show_flair_in_every_channel():
    images = torch.rand(6, 3, 32, 32) * 200 + 20
    masks = torch.zeros(6, 1, 32, 32)
    plain = AugmentConfig(flip_prob=0, affine_prob=0, intensity_prob=0, noise_std=0)
    x_all, _ = augment(
        images,
        masks,
        _stats(6),
        AugmentConfig(**{**plain.__dict__, "flair_only_prob": 1.0}),
        torch.Generator().manual_seed(0),
    )
    x_none, _ = augment(images, masks, _stats(6), plain, torch.Generator().manual_seed(0))
    assert torch.equal(x_all[:, 0], x_all[:, 1]) and torch.equal(x_all[:, 2], x_all[:, 1])
    assert torch.equal(x_all[:, 1], x_none[:, 1])  # FLAIR itself is untouched
    assert not torch.allclose(x_none[:, 0], x_none[:, 1])  # without it, the channels differ


def test_hard_negative_crops_of_tumor_free_slices_hold_the_brightest_flair():
    images = torch.zeros(8, 3, 128, 128)
    images[:, 1, 100:114, 6:20] = 5.0  # a bright spot (1.2% of the slice) far from the centre, FLAIR only
    masks = torch.zeros(8, 1, 128, 128)
    spot = float((5.0 - 100.0) / 50.0)  # the spot after normalisation
    plain, _ = augment(images, masks, _stats(8), PLAIN, torch.Generator().manual_seed(0), crop_size=32)
    hard, _ = augment(images, masks, _stats(8), PLAIN, torch.Generator().manual_seed(0), 32, bright_prob=1.0)
    assert (hard[:, 1].amax((-2, -1)) == spot).all()  # every hard-negative patch holds the spot
    assert (plain[:, 1].amax((-2, -1)) == spot).sum() < 4  # a random patch of 32/128 rarely does


def test_choose_windows_keeps_patches_inside_the_slice_and_needs_flair_for_hard_negatives():
    annotation = torch.zeros(3, 64, 64)
    annotation[0, 0:3, 0:3] = 1  # tumor in a corner: the patch is pushed inside, and still holds it
    windows = choose_windows(annotation, None, 32, torch.Generator().manual_seed(0))
    assert all(0 <= top <= 32 and 0 <= left <= 32 for top, left in windows)
    assert windows[0] == (0, 0)
    with pytest.raises(ValueError, match="FLAIR"):
        choose_windows(annotation, None, 32, torch.Generator().manual_seed(0), bright_prob=1.0)


def test_a_25d_input_gets_one_draw_per_modality_shared_by_its_slices():
    images, masks = _blob_batch()
    cfg = AugmentConfig(noise_std=0.0, gamma_prob=0.5, bias_field_prob=0.5, flair_only_prob=0.5)
    flat, _ = augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(3))
    stacked, stacked_masks = augment(
        images.repeat(1, 3, 1, 1), masks, _stats(8).repeat(1, 1, 3), cfg, torch.Generator().manual_seed(3)
    )
    assert stacked.shape == (8, 9, 64, 64)
    for k in range(3):  # every slice of the neighbourhood was augmented exactly like the 2D input
        assert torch.allclose(stacked[:, 3 * k : 3 * k + 3], flat, atol=1e-5)


def test_augment_keeps_the_annotation_binary_and_a_teacher_channel_soft():
    images, masks = _blob_batch()
    soft = torch.cat([masks, masks * 0.7], 1)  # channel 1: a teacher 70% sure inside the rectangle
    cfg = AugmentConfig(intensity_prob=0.0, noise_std=0.0)
    x1, y1 = augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(3))
    x2, y2 = augment(images, soft, _stats(8), cfg, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and torch.equal(y2[:, :1], y1)  # the same draws, the annotation as before
    assert set(torch.unique(y2[:, 0]).tolist()) <= {0.0, 1.0}
    teacher = y2[:, 1]
    assert float(teacher.max()) == pytest.approx(0.7, abs=1e-5)  # not thresholded to 0 or 1
    assert ((teacher > 0) & (teacher < 0.7 - 1e-3)).any()  # bilinear edges stay soft
    _, cropped = augment(images, soft, _stats(8), cfg, torch.Generator().manual_seed(3), crop_size=32)
    assert cropped.shape == (8, 2, 32, 32) and bool((cropped[:, 0] > 0).flatten(1).any(1).all())
    assert float(cropped[:, 1].max()) == pytest.approx(0.7, abs=1e-5)


def test_hard_negatives_rank_flair_as_clipped_and_work_on_a_25d_input():
    """normalize clips at the volume's range, so every pixel above it is equally bright: a dimmer
    clipped spot is as good a hard negative as a brighter one."""
    images = torch.zeros(8, 9, 128, 128)
    images[:, 4, 4:34, 4:34] = 300.0  # centre slice's FLAIR: two spots, each over 1% of the slice,
    images[:, 4, 94:124, 94:124] = 400.0  # both above the clip range (255)
    images[:, 3, 4:34, 4:34] = 50.0  # another channel marks where the dim spot is
    masks = torch.zeros(8, 1, 128, 128)
    x, _ = augment(images, masks, _stats(8).repeat(1, 1, 3), PLAIN, torch.Generator().manual_seed(0), 32, 1.0)
    assert x.shape == (8, 9, 32, 32)
    on_spot = x[:, 4] == (255.0 - 100.0) / 50.0  # a clipped pixel after normalisation
    assert bool(on_spot.flatten(1).any(1).all())  # every patch holds a spot
    on_dim_spot = x[:, 3] == (50.0 - 100.0) / 50.0
    assert bool(on_dim_spot.any())  # ranking unclipped intensities would always pick the brighter spot


def test_augment_leaves_the_callers_tensors_unchanged():
    images, masks = _blob_batch()
    before_images, before_masks = images.clone(), masks.clone()
    cfg = AugmentConfig(gamma_prob=1.0, bias_field_prob=1.0)
    augment(images, masks, _stats(8), cfg, torch.Generator().manual_seed(0), crop_size=32, bright_prob=1.0)
    assert torch.equal(images, before_images) and torch.equal(masks, before_masks)


def test_mirrored_channels_match_inference_and_follow_the_transform():
    from lggseg.infer.preprocess import mirror_channels, normalize

    images = torch.rand(4, 3, 32, 32) * 255
    masks = torch.zeros(4, 1, 32, 32)
    stats = _stats(4)
    midlines = torch.tensor([15.5, 14.0, 16.5, 15.0])
    x, _ = augment(images, masks, stats, PLAIN, torch.Generator().manual_seed(0), midlines=midlines)
    assert x.shape == (4, 6, 32, 32)
    for i in range(4):  # untransformed: exactly the inference input
        expected = normalize(mirror_channels(images[i : i + 1], float(midlines[i])), stats[i].repeat(1, 2))
        assert torch.allclose(x[i : i + 1], expected, atol=1e-4)
    # a flipped sample mirrors its mirrored channels too, so every pixel keeps its twin
    flipped, _ = augment(
        images,
        masks,
        stats,
        AugmentConfig(flip_prob=1, affine_prob=0, intensity_prob=0, noise_std=0),
        torch.Generator().manual_seed(0),
        midlines=torch.full((4,), 15.5),
    )
    plain, _ = augment(images, masks, stats, PLAIN, torch.Generator().manual_seed(0), midlines=torch.full((4,), 15.5))
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-4)
    # patches: the mirrored channels are the whole slice's mirror cut at the same place
    crops, _ = augment(images, masks, stats, PLAIN, torch.Generator().manual_seed(5), crop_size=16, midlines=midlines)
    assert crops.shape == (4, 6, 16, 16)
    for i in range(4):
        whole = normalize(mirror_channels(images[i : i + 1], float(midlines[i])), stats[i].repeat(1, 2))[0]
        hits = [
            (top, left)
            for top in range(17)
            for left in range(17)
            if torch.allclose(whole[:3, top : top + 16, left : left + 16], crops[i, :3], atol=1e-4)
        ]
        assert len(hits) == 1
        top, left = hits[0]
        assert torch.allclose(whole[3:, top : top + 16, left : left + 16], crops[i, 3:], atol=1e-4)
