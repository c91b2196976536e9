import pytest
import torch

from lggseg.model.unet import UNet, UNetConfig, count_parameters


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 50, 70), (1, 3, 17, 33)])
def test_any_input_size_returns_same_size_logits(shape):
    model = UNet(UNetConfig(base_width=4, depth=3)).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 1, shape[2], shape[3])


def test_forward_backward():
    model = UNet(UNetConfig(base_width=4, depth=2, dropout=0.1))
    out = model(torch.randn(2, 3, 32, 32))
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_classic_widths_match_design_parameter_counts():
    assert count_parameters(UNet(UNetConfig(base_width=16))) == 1_942_577
    assert count_parameters(UNet(UNetConfig(base_width=32))) == 7_763_041


def test_bad_config_and_bad_input_are_explained():
    with pytest.raises(ValueError, match="depth"):
        UNetConfig(depth=0)
    with pytest.raises(ValueError, match="expected input"):
        UNet(UNetConfig(base_width=4, depth=2))(torch.randn(1, 1, 32, 32))


def test_context_slices_need_three_channels_per_slice():
    with pytest.raises(ValueError, match="needs in_channels 9"):
        UNetConfig(context_slices=1)
    with pytest.raises(ValueError, match="context_slices must be 0, 1 or 2"):
        UNetConfig(in_channels=21, context_slices=3)
    model = UNet(UNetConfig(in_channels=9, base_width=4, depth=2, context_slices=1))
    assert model(torch.randn(1, 9, 32, 32)).shape == (1, 1, 32, 32)
