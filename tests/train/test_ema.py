"""The weight average: its update rule, and that a run with ``ema_decay`` validates, saves and resumes it."""

import pytest
import torch

from lggseg.model.bundle import load_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.train.config import TrainConfig
from lggseg.train.ema import WeightAverage
from lggseg.train.loop import train
from lggseg.train.run_folder import RunFolder


def _tiny(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(base_width=2, depth=1))


def test_update_warms_up_then_uses_the_decay():
    start, current = _tiny(0), _tiny(1)
    average = WeightAverage(start, decay=0.9)
    name, before = next((k, v.clone()) for k, v in start.state_dict().items() if v.is_floating_point())
    average.update(current)  # first update: decay min(0.9, 1/10) = 0.1
    expected = 0.1 * before + 0.9 * current.state_dict()[name]
    assert torch.allclose(average.model.state_dict()[name], expected)
    assert average.updates == 1 and average.current_decay() == pytest.approx(2 / 11)
    average.updates = 1000
    assert average.current_decay() == 0.9
    counters = [k for k, v in current.state_dict().items() if not v.is_floating_point()]
    assert counters and all(torch.equal(average.model.state_dict()[k], current.state_dict()[k]) for k in counters)
    assert not any(p.requires_grad for p in average.model.parameters())  # never trained itself
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(start, decay=1.0)


@pytest.mark.slow
def test_run_saves_the_average_as_best_and_resumes_it(sample_dir, tmp_path):
    cfg = TrainConfig(
        data=str(sample_dir), out=str(tmp_path / "run"), fold=1, n_validation=1, epochs=2, samples_per_epoch=16,
        batch_size=8, threads=1, calibrate=False, ema_decay=0.9, model=UNetConfig(base_width=4, depth=2),
    )  # fmt: skip
    run = RunFolder(train(cfg, log=lambda message: None, stop_after_epochs=1))
    assert run.state()["ema_updates"] == 2  # 16 samples / batch 8 = 2 steps
    averaged, trained = _checkpoint(run)
    assert averaged.keys() == trained.keys()
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)  # the average is not the model
    best = load_weights(run.best).model.state_dict()  # epoch 1 is always the best so far
    assert all(torch.equal(best[k].float(), averaged[k].float()) for k in best)
    train(cfg, resume=True, log=lambda message: None)
    state = run.state()
    assert state["epoch"] == 1 and state["ema_updates"] == 4  # the average continued across the resume
    assert any(not torch.equal(_checkpoint(run)[0][k], averaged[k]) for k in averaged)


def _checkpoint(run: RunFolder) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weight average, trained model) tensors of the run's checkpoint."""
    return run.checkpoint_tensors("ema."), run.checkpoint_tensors("model.")
