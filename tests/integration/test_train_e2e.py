"""End to end on real slices: one tiny epoch of training, then evaluate and predict via the CLI."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from lggseg.commands.cli import main
from lggseg.model.bundle import load_weights
from lggseg.train.run_folder import RunFolder

pytestmark = pytest.mark.slow

TINY = {
    "fold": 1,  # the bundled patients are fold 0, so for fold 1 they are training/validation patients
    "n_validation": 1,
    "epochs": 1,
    "samples_per_epoch": 16,
    "batch_size": 8,
    "threads": 1,
    "calibrate": True,
    "model": {"base_width": 4, "depth": 2},
}


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sample_dir) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = root / "run"
    assert run_cli(["train", "--data", str(sample_dir), "--config", str(config), "--out", str(run)]) == 0
    return run


def test_train_writes_checkpoints_curves_log_config(trained_run):
    names = sorted(p.name for p in trained_run.iterdir())
    assert names == [
        "best.safetensors",
        "calibration.json",
        "checkpoint.safetensors",
        "config.yaml",
        "curves.png",
        "log.csv",
        "split.json",
    ]
    rows = list(csv.DictReader((trained_run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]
    assert float(rows[0]["train_loss"]) > 0
    # the log, the checkpoint, the best weights and the calibration tell the same story
    state = RunFolder(trained_run).state()
    assert state["epoch"] == 0 and state["best_epoch"] == 0
    assert float(rows[0]["val_dice"]) == pytest.approx(state["history"][0]["val_dice"], rel=1e-5)
    best = load_weights(trained_run)
    assert best.info["epoch"] == 0 and best.info["val_dice"] == state["history"][0]["val_dice"]
    calibration = json.loads((trained_run / "calibration.json").read_text())
    split = json.loads((trained_run / "split.json").read_text())
    assert calibration["validation_patients"] == split["validation"] and len(split["train"]) == 1
    assert best.post.to_dict().items() <= calibration["chosen"].items()  # the chosen rule is in the weights
    assert RunFolder(trained_run).finished()


def test_resume_continues_from_last_epoch(trained_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    assert run_cli(["train", "--resume", str(run), "--epochs", "2"]) == 0
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert RunFolder(run).state()["epoch"] == 1
    assert [row["epoch"] for row in RunFolder(run).state()["history"]] == [1, 2]


def test_fine_tune_starts_from_weights_and_records_their_patients(trained_run, sample_dir, tmp_path):
    import torch

    from lggseg.train.config import config_from_dict
    from lggseg.train.loop import train

    start = load_weights(trained_run)
    cfg = config_from_dict({**TINY, "data": str(sample_dir), "out": str(tmp_path / "ft"), "calibrate": False})
    # "{fold}" in the path names the run's own fold's weights
    (tmp_path / f"fold_{cfg.fold}").mkdir()
    shutil.copy(trained_run / "best.safetensors", tmp_path / f"fold_{cfg.fold}" / "best.safetensors")
    template = str(tmp_path / "fold_{fold}" / "best.safetensors")
    # with a weight average, the average is what is saved: it must start from the initial weights too
    train(cfg.replace(init_weights=template, lr=1e-9, warmup_epochs=0.0, ema_decay=0.99), log=lambda _: None)
    tuned = load_weights(tmp_path / "ft")
    # a learning rate of 1e-9 leaves the convolutions (and their average) where the initial weights put them
    for name, tensor in start.model.state_dict().items():
        if name.endswith(".weight") and tensor.dim() == 4:
            assert torch.allclose(tuned.model.state_dict()[name], tensor, atol=1e-6), name
    split = json.loads((tmp_path / "ft" / "split.json").read_text())
    assert split["init_trained_on"] == start.info["trained_on"]
    assert set(tuned.info["trained_on"]) == set(start.info["trained_on"]) | set(split["train"] + split["validation"])


def test_fine_tune_refuses_weights_that_saw_the_test_fold(trained_run, tiny_dataset, tmp_path):
    from lggseg.errors import LggsegError
    from lggseg.model.bundle import save_weights
    from lggseg.train.config import config_from_dict
    from lggseg.train.loop import train

    # a third patient, named as a canonical fold-1 patient, becomes fold 1's test patient
    source, stolen = tiny_dataset / "TCGA_CS_4944_20010208", "TCGA_CS_4943_20000902"
    (tiny_dataset / stolen).mkdir()
    for path in source.iterdir():
        (tiny_dataset / stolen / path.name.replace(source.name, stolen)).write_bytes(path.read_bytes())
    start = load_weights(trained_run)
    leaky = tmp_path / "leaky.safetensors"
    save_weights(leaky, start.model, info={"trained_on": [stolen]})
    cfg = config_from_dict({**TINY, "data": str(tiny_dataset), "out": str(tmp_path / "leak")})
    with pytest.raises(LggsegError, match="1 of this fold's test patients"):
        train(cfg.replace(init_weights=str(leaky)), log=lambda _: None)
    assert not (tmp_path / "leak" / "best.safetensors").exists()
    save_weights(leaky, start.model, info={"fold": 0})  # older weights: trained on every fold but their own
    with pytest.raises(LggsegError, match="1 of this fold's test patients"):
        train(cfg.replace(init_weights=str(leaky)), log=lambda _: None)
    save_weights(leaky, start.model, info={})  # weights that do not say what they saw are refused too
    with pytest.raises(LggsegError, match="do not record"):
        train(cfg.replace(init_weights=str(leaky)), log=lambda _: None)


def test_a_25d_run_with_per_image_dice_trains_and_predicts(sample_dir, tmp_path):
    """The ablation levers end to end: 2.5D input, per-image Dice, crops with hard negatives."""
    from lggseg.data.dataset import index_dataset, load_volume
    from lggseg.infer.segmenter import InferenceConfig, Segmenter
    from lggseg.train.config import config_from_dict
    from lggseg.train.loop import train

    values = {**TINY, "model": {**TINY["model"], "in_channels": 9, "context_slices": 1}}
    cfg = config_from_dict(
        {**values, "data": str(sample_dir), "out": str(tmp_path / "run25d"), "dice_per_image": True}
    ).replace(crop_size=64, hard_negative_prob=1.0, vertex_fraction=0.25)
    train(cfg, log=lambda _: None)
    bundle = load_weights(tmp_path / "run25d" / "best.safetensors")
    assert bundle.config.context_slices == 1 and bundle.config.in_channels == 9
    volume = load_volume(index_dataset(sample_dir).patients[0])
    mask = Segmenter.from_weights(tmp_path / "run25d", InferenceConfig(bf16="off")).segment(volume.images)
    assert mask.shape == volume.require_masks().shape


def test_calibrate_chooses_a_finished_runs_rule_again_on_its_validation_patients(trained_run, tmp_path, sample_dir):
    from lggseg.model.bundle import PostProcess, save_weights
    from lggseg.train.calibrate import RULES

    run = tmp_path / "recalibrated"
    shutil.copytree(trained_run, run)
    old = load_weights(run / "best.safetensors")
    outdated = PostProcess(0.3, min_component=7)  # a rule no longer on the list
    save_weights(run / "best.safetensors", old.model, outdated, "none", old.info)
    (run / "calibration.json").unlink()
    assert run_cli(["calibrate", str(run), "--data", str(sample_dir)]) == 0
    new = load_weights(run / "best.safetensors")
    calibration = json.loads((run / "calibration.json").read_text())
    assert new.post in RULES and new.post != outdated
    assert new.post.to_dict().items() <= calibration["chosen"].items()
    assert len(calibration["grid"]) == len(RULES)
    assert calibration["validation_patients"] == json.loads((run / "split.json").read_text())["validation"]
    for name, tensor in old.model.state_dict().items():  # the network is untouched
        assert new.model.state_dict()[name].equal(tensor)


def test_calibrate_refuses_a_folder_that_is_not_a_run(tmp_path, sample_dir, capsys):
    assert run_cli(["calibrate", str(tmp_path), "--data", str(sample_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a finished run folder" in err and len(err.splitlines()) == 1


def test_distillation_trains_on_the_teachers_probability_and_records_them(trained_run, sample_dir, tmp_path):
    import numpy as np

    from lggseg.train.config import config_from_dict
    from lggseg.train.loop import train

    teacher = str(trained_run / "best.safetensors")
    base = config_from_dict({**TINY, "data": str(sample_dir), "calibrate": False})
    seen: dict[str, list[np.ndarray]] = {"plain": [], "distilled": []}
    plain_cfg = base.replace(out=str(tmp_path / "plain"))
    train(plain_cfg, log=lambda _: None, step_callback=lambda s: seen["plain"].append(s.y.numpy()))
    cfg = base.replace(out=str(tmp_path / "student"), distill_teachers=(teacher,), distill_weight=0.5)
    train(cfg, log=lambda _: None, step_callback=lambda s: seen["distilled"].append(s.y.numpy()))
    plain, distilled = np.concatenate(seen["plain"]), np.concatenate(seen["distilled"])
    assert set(np.unique(plain)) <= {0.0, 1.0}  # the annotation alone
    assert ((distilled > 0) & (distilled < 1) & (distilled != 0.5)).any()  # the teacher's probabilities mixed in
    split = json.loads((tmp_path / "student" / "split.json").read_text())
    assert split["distill_teachers"] == [{"weights": teacher, "sha256": load_weights(trained_run).sha256}]
    assert split["distill_weight"] == 0.5
