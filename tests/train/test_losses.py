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
