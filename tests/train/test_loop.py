"""The training loop's run settings: a compiled training step trains and saves the U-Net itself."""

import pytest
import torch

from lggseg.infer import runtime
from lggseg.model.bundle import load_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.train.config import TrainConfig
from lggseg.train.loop import train
from lggseg.train.run_folder import RunFolder


@pytest.mark.slow
def test_compile_on_trains_through_the_compiled_step_and_saves_plain_weights(sample_dir, tmp_path, monkeypatch):
    calls = []
    real = runtime.compile_for_training

    def traced(model, fall_back, backend="inductor"):
        calls.append((type(model).__name__, fall_back))
        return real(model, fall_back, backend="aot_eager")  # traced like inductor, without code generation

    monkeypatch.setattr(runtime, "compile_for_training", traced)
    cfg = TrainConfig(
        data=str(sample_dir), out=str(tmp_path / "run"), fold=1, n_validation=1, epochs=1, samples_per_epoch=16,
        batch_size=8, threads=1, calibrate=False, compile="on", crop_size=64, model=UNetConfig(base_width=4, depth=2),
    )  # fmt: skip
    messages: list[str] = []
    run = RunFolder(train(cfg, log=messages.append))
    assert calls == [("UNet", False)]  # "on" fails loudly; only "auto" falls back to eager
    assert any("compiled" in m for m in messages)
    compiled = load_weights(run.best).model.state_dict()
    assert not any("_orig_mod" in key for key in compiled)
    off = train(cfg.replace(out=str(tmp_path / "eager"), compile="off"), log=lambda message: None)
    assert calls == [("UNet", False)]  # "off" never compiles
    eager = load_weights(RunFolder(off).best).model.state_dict()
    torch.manual_seed(cfg.seed)
    initial = UNet(cfg.model).state_dict()  # the weights both runs started from

    def update(weights):
        return torch.cat([(weights[k].float() - initial[k].float()).flatten() for k in initial if k.endswith("weight")])

    moved_compiled, moved_eager = update(compiled), update(eager)
    assert moved_compiled.abs().max() > 1e-3  # the compiled step trained the module the run saved
    # same draws, same steps: the compiled run moved the weights as the eager run did, up to rounding
    assert torch.nn.functional.cosine_similarity(moved_compiled, moved_eager, dim=0) > 0.99
