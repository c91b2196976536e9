"""Speed settings: the inference copy of a model (BatchNorm folded, bf16 weights, same function)
and the compiled training step."""

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


@pytest.mark.parametrize(
    ("requested", "device", "steps", "distributed", "expected"),
    [
        ("on", "cpu", 1, False, True),
        ("off", "cpu", 10_000, False, False),
        ("auto", "cpu", runtime.COMPILE_MIN_STEPS - 1, False, False),  # too short to pay for the compile
        ("auto", "cpu", runtime.COMPILE_MIN_STEPS, True, False),  # DDP runs compile only when asked
        ("auto", "meta", runtime.COMPILE_MIN_STEPS, False, False),  # neither CPU nor CUDA
    ],
)
def test_use_compile_resolves_the_setting(requested, device, steps, distributed, expected):
    assert runtime.use_compile(requested, torch.device(device), steps, distributed) is expected


def test_use_compile_auto_on_cpu_needs_the_cpp_compiler(monkeypatch, tmp_path):
    long_run = runtime.COMPILE_MIN_STEPS
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert runtime.use_compile("auto", torch.device("cpu"), long_run) is False
    fake = tmp_path / "c++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert runtime.use_compile("auto", torch.device("cpu"), long_run) is True
    assert runtime.use_compile("auto", torch.device("cuda"), long_run) is True


def test_compiled_training_step_matches_eager_and_trains_the_same_parameters():
    """One Dice+BCE training step through the compiled wrapper (traced forward and backward; the
    ``aot_eager`` backend skips TorchInductor's code generation, minutes on 2 cores, which
    benchmarks/train_compile.py exercises): the same loss and gradients as eager, and the
    optimizer updates the module whose state the run saves (no ``_orig_mod.`` keys)."""
    from lggseg.train.losses import dice_bce_loss

    torch.manual_seed(0)
    eager = UNet(UNetConfig(base_width=2, depth=1)).train()
    twin = UNet(UNetConfig(base_width=2, depth=1)).train()
    twin.load_state_dict(eager.state_dict())
    compiled = runtime.compile_for_training(twin, fall_back=False, backend="aot_eager")
    x = torch.randn(4, 3, 32, 32)
    y = (torch.rand(4, 1, 32, 32) > 0.8).float()
    losses = []
    for model in (eager, compiled):
        loss = dice_bce_loss(model(x), y)
        loss.backward()
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(eager.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    before = next(twin.parameters()).detach().clone()
    torch.optim.SGD(compiled.parameters(), lr=0.1).step()
    assert not torch.equal(next(twin.parameters()), before)  # the compiled wrapper trains twin itself
    assert not any("_orig_mod" in key for key in twin.state_dict())
