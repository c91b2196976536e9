"""RunFolder: one checkpoint file, one reader of the training state, and run folders of earlier versions."""

import json

import pytest
import torch
from safetensors.torch import save

from lggseg.errors import LggsegError
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.train.config import TrainConfig
from lggseg.train.run_folder import RunFolder

CFG = TrainConfig(epochs=2, calibrate=True, model=UNetConfig(base_width=4, depth=2))


def _state(epoch: int) -> dict:
    history = [{"epoch": e + 1, "val_dice": 0.5 + e / 10} for e in range(epoch + 1)]
    last = history[-1]["val_dice"]
    return {
        "epoch": epoch,
        "best_val_dice": last,
        "best_epoch": epoch,
        "last_val_dice": last,
        "history": history,
        "config": CFG.to_dict(),
    }


def _model_and_optimizer() -> tuple[UNet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = UNet(CFG.model)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(2, 3, 16, 16)).mean().backward()
    optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip_and_finished(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not run.has_checkpoint() and not run.finished()
    with pytest.raises(LggsegError, match="no checkpoint.safetensors"):
        run.state()
    model, optimizer = _model_and_optimizer()
    run.write_config(CFG)
    run.save_checkpoint(model, optimizer, _state(0), best=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["best.safetensors", "checkpoint.safetensors", "config.yaml"]
    assert run.state()["epoch"] == 0 and run.config() == CFG
    assert not run.finished()  # 1 of 2 epochs
    run.save_checkpoint(model, optimizer, _state(1), best=False)
    assert not run.finished()  # calibration asked for, not done
    run.write_calibration({"chosen": {}})
    assert run.finished()

    fresh = UNet(CFG.model)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters())
    assert run.load_checkpoint(fresh, fresh_optimizer)["epoch"] == 1
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def _legacy_folder(path, state: dict, with_resume: bool = True) -> RunFolder:
    """A run folder as lggseg wrote it before the single checkpoint (and as running CV jobs still do)."""
    path.mkdir()
    model, optimizer = _model_and_optimizer()
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    for pid, values in optimizer.state_dict()["state"].items():
        tensors.update({f"optim.{pid}.{k}": torch.as_tensor(v).contiguous() for k, v in values.items()})
    if with_resume:
        (path / "resume.safetensors").write_bytes(save(tensors, metadata={"state": json.dumps(state)}))
    (path / "state.json").write_text(json.dumps(state))
    save_weights(path / "best.safetensors", model, info={"epoch": state["best_epoch"]})
    save_weights(path / "last.safetensors", model)
    (path / "optimizer.safetensors").write_bytes(save({"0.step": torch.tensor(1.0)}))
    (path / "calibration.json").write_text("{}")
    return RunFolder(path)


def test_a_finished_run_folder_of_the_previous_format_is_read(tmp_path):
    run = _legacy_folder(tmp_path / "old", _state(1))
    assert run.has_checkpoint() and run.finished()
    assert run.state()["epoch"] == 1 and run.config() == CFG
    only_state_json = _legacy_folder(tmp_path / "older", _state(1), with_resume=False)
    assert only_state_json.finished() and only_state_json.state()["epoch"] == 1


def test_resume_file_wins_over_a_stale_state_json_and_new_checkpoints_replace_legacy_files(tmp_path):
    run = _legacy_folder(tmp_path / "old", _state(0))
    (run.path / "state.json").write_text(json.dumps(_state(1)))  # a stale or edited copy is not trusted
    assert run.state()["epoch"] == 0
    model = UNet(CFG.model)
    optimizer = torch.optim.AdamW(model.parameters())
    assert run.load_checkpoint(model, optimizer)["epoch"] == 0  # resumes from resume.safetensors
    run.save_checkpoint(model, optimizer, _state(1), best=False)
    names = sorted(p.name for p in run.path.iterdir())
    assert names == ["best.safetensors", "calibration.json", "checkpoint.safetensors"]
    assert run.state()["epoch"] == 1


def test_a_published_run_without_its_checkpoint_is_finished_when_its_log_holds_every_epoch(tmp_path):
    """scripts/publish_cv.sh copies weights, config, log and calibration, not the checkpoint."""
    run = RunFolder(tmp_path / "published")
    model, _ = _model_and_optimizer()
    run.path.mkdir()
    run.write_config(CFG)
    save_weights(run.best, model)
    header = "epoch,lr,train_loss,train_dice,train_iou,val_loss,val_dice,val_iou,seconds\n"
    (run / RunFolder.LOG).write_text(header + "1,0.1,1,0.5,0.4,1,0.60,0.5,9\n")
    run.write_calibration({"chosen": {}})
    assert not run.has_checkpoint() and run.config() == CFG
    assert not run.finished()  # 1 of 2 epochs logged: interrupted
    (run / RunFolder.LOG).write_text(header + "1,0.1,1,0.5,0.4,1,0.60,0.5,9\n2,0.1,1,0.5,0.4,1,0.55,0.5,9\n")
    assert run.finished()
    (run / RunFolder.CALIBRATION).unlink()
    assert not run.finished()  # calibration asked for, not there
