"""The inference copy of a model: BatchNorm folded, bf16 weights, same function."""

import numpy as np
import pytest
import torch

from lggseg.infer import runtime
from lggseg.model.unet import UNet, UNetConfig


@pytest.fixture()
def trained_like() -> UNet:
    """A small U-Net whose BatchNorm layers hold non-trivial statistics and affine parameters."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=8, depth=2))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_fold_batchnorm_removes_every_norm_and_keeps_the_function(trained_like):
    folded = runtime.fold_batchnorm(trained_like)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in trained_like.modules()) == 10  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), trained_like(x).numpy(), atol=1e-4, rtol=1e-4)


def test_prepare_for_inference_bf16_matches_fp32_logits(trained_like):
    x = torch.randn(2, 3, 64, 64)
    cpu = torch.device("cpu")
    ready = runtime.prepare_for_inference(trained_like, cpu, bf16=True)
    assert {p.dtype for p in ready.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trained_like.parameters()} == {torch.float32}
    with torch.inference_mode():
        got = ready(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
        want = trained_like(x)
    assert torch.corrcoef(torch.stack([got.ravel(), want.ravel()]))[0, 1] > 0.999
