import torch

from lggseg.train.losses import dice_bce_loss, soft_dice_loss


def test_perfect_prediction_has_low_loss():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert soft_dice_loss(logits, target) < 0.01
    assert dice_bce_loss(logits, target) < 0.01


def test_wrong_prediction_has_high_loss_and_gradients():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    logits = ((1 - target) * 2 - 1) * 5
    logits.requires_grad_(True)
    loss = dice_bce_loss(logits, target)
    loss.backward()
    assert loss > 1.5
    assert logits.grad.abs().sum() > 0


def test_empty_batch_is_defined():
    target = torch.zeros(2, 1, 8, 8)
    assert torch.isfinite(soft_dice_loss(torch.full((2, 1, 8, 8), -10.0), target))


def test_per_image_dice_makes_a_missed_small_tumor_count():
    from lggseg.train.losses import per_image_dice_loss, soft_dice_loss

    target = torch.zeros(2, 1, 32, 32)
    target[0, :, 4:28, 4:28] = 1  # a large tumor, found
    target[1, :, 10:14, 10:14] = 1  # a 16-pixel tumor, missed
    logits = torch.where(target.bool(), 10.0, -10.0)
    logits[1] = -10.0
    pooled, per_image = float(soft_dice_loss(logits, target)), float(per_image_dice_loss(logits, target))
    assert pooled < 0.02  # the large tumor (576 px) hides the miss (16 px)
    assert 0.45 < per_image < 0.5  # half of the tumor images scored (almost) 0: (1 - 1/17) / 2
    empty = torch.zeros(2, 1, 8, 8)
    assert float(per_image_dice_loss(torch.full_like(empty, -10.0), empty)) == float(
        soft_dice_loss(torch.full_like(empty, -10.0), empty)
    )
