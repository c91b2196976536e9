"""The training loop's run settings: a compiled training step trains and saves the U-Net itself;
a refit trains without validation patients and adopts its rule from another run."""

import json

import pytest
import torch

from lggseg.errors import LggsegError
from lggseg.infer import runtime
from lggseg.model.bundle import PostProcess, load_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.train.calibrate import ADOPTED
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


@pytest.mark.slow
def test_a_mirror_model_trains_and_predicts_through_the_segmenter(sample_dir, tmp_path):
    from lggseg.data.dataset import index_dataset, load_volume
    from lggseg.infer.preprocess import mirror_channels, normalize, volume_midline, volume_stats
    from lggseg.infer.segmenter import Segmenter

    model = UNetConfig(in_channels=18, base_width=4, depth=2, context_slices=1, mirror=True)
    cfg = TrainConfig(
        data=str(sample_dir), out=str(tmp_path / "run"), fold=1, n_validation=1, epochs=1, samples_per_epoch=16,
        batch_size=8, threads=1, calibrate=False, compile="off", crop_size=64, model=model,
    )  # fmt: skip
    run = RunFolder(train(cfg, log=lambda message: None))
    bundle = load_weights(run.best)
    assert bundle.config.mirror and bundle.config.in_channels == 18
    volume = load_volume(index_dataset(sample_dir).patients[0])
    prob = Segmenter.from_weights(run.best).probabilities(volume.images)
    # the Segmenter's input is the 2.5D stack followed by its mirror about the head's midline
    images = volume.images
    near = torch.from_numpy(images[[0, 0, 1]]).permute(0, 3, 1, 2).flatten(0, 1)[None].float()  # slice 0's stack
    raw = mirror_channels(near, volume_midline(images))
    x = normalize(raw, torch.from_numpy(volume_stats(images)).repeat(1, 6))
    unmirrored = normalize(torch.cat([near, near], 1), torch.from_numpy(volume_stats(images)).repeat(1, 6))
    with torch.no_grad():
        expected = torch.sigmoid(bundle.model.eval()(x))[0, 0].numpy()
        other = torch.sigmoid(bundle.model(unmirrored))[0, 0].numpy()
    error = abs(prob[0] - expected).max()  # the Segmenter may run in bf16
    assert error < 2e-3 and abs(other - expected).max() > 10 * error


RULE = PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=2, min_end_core=100, fill_holes=True)


def _source_run(folder, validation: list[str]) -> str:
    """A calibrated run folder as far as a refit reads it: its ``calibration.json``."""
    RunFolder(folder).path.mkdir(parents=True)
    chosen = {"tta": "none", **RULE.to_dict(), "val_mean_dice": 0.87}
    RunFolder(folder).write_calibration({"validation_patients": validation, "chosen": chosen})
    return str(folder)


def _refit(sample_dir, tmp_path, source: str, **changes) -> TrainConfig:
    return TrainConfig(
        data=str(sample_dir), out=str(tmp_path / "refit"), fold=1, n_validation=0, calibrate=False,
        rule_from=source, epochs=2, samples_per_epoch=16, batch_size=8, threads=1, compile="off", crop_size=64,
        model=UNetConfig(base_width=4, depth=2), **changes,
    )  # fmt: skip


@pytest.mark.slow
def test_a_refit_trains_on_every_patient_keeps_its_last_epoch_and_adopts_the_source_rule(sample_dir, tmp_path):
    patients = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    source = _source_run(tmp_path / "source" / "fold_1" / "run", patients[:1])  # fold 1's, as {fold} names it
    cfg = _refit(sample_dir, tmp_path, str(tmp_path / "source" / "fold_{fold}" / "run"))
    messages: list[str] = []
    run = RunFolder(train(cfg, log=messages.append))
    split = json.loads((run / RunFolder.SPLIT).read_text())
    assert split["train"] == patients and split["validation"] == []  # the validation patient trains too
    bundle = load_weights(run.best)
    assert bundle.post == RULE and bundle.tta == "none"
    assert bundle.info["epoch"] == 1 and bundle.info["calibration"]["adopted_from"] == source
    last = run.checkpoint_tensors()
    assert all(torch.equal(last[k], v) for k, v in bundle.model.state_dict().items())  # the last epoch ships
    record = json.loads(run.calibration.read_text())
    assert record["selection"] == ADOPTED and record["validation_patients"] == patients[:1]
    rows = (run / RunFolder.LOG).read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[6] == ""  # no validation Dice logged
    assert any("no validation patients" in m for m in messages) and run.finished()
    (run / RunFolder.CALIBRATION).unlink()
    assert not run.finished()  # trained, but its rule not adopted yet


def test_a_refit_refuses_a_rule_chosen_on_its_test_patients_before_training(sample_dir, tmp_path):
    patients = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    source = _source_run(tmp_path / "source", patients[:1])
    cfg = _refit(sample_dir, tmp_path, source, holdout=(patients[0],))  # patients[0] is now a test patient
    with pytest.raises(LggsegError, match="chosen on 1 of this run's test patients"):
        train(cfg, log=lambda message: None)
    assert not RunFolder(cfg.out).has_checkpoint()
    with pytest.raises(LggsegError, match="no calibration.json"):
        train(_refit(sample_dir, tmp_path, str(tmp_path / "nowhere")), log=lambda message: None)
