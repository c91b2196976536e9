"""Distillation targets: teacher paths per fold, the leak check, the mix and the bank's targets."""

import numpy as np
import pytest
import torch

from lggseg.data.dataset import Volume
from lggseg.errors import LggsegError
from lggseg.model.bundle import load_weights, save_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.train.slices import SOFT_SCALE, SliceBank
from lggseg.train.teacher import mix_targets, refuse_leak, teacher_paths, teacher_targets


def test_teacher_paths_fill_in_the_fold():
    paths = teacher_paths(["cv/fold_{fold}/run/best.safetensors", "fixed.safetensors"], 3)
    assert [str(p) for p in paths] == ["cv/fold_3/run/best.safetensors", "fixed.safetensors"]


def _weights(tmp_path, info) -> object:
    path = tmp_path / "t.safetensors"
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2)).eval(), info=info)
    return path


def test_refuse_leak_refuses_teachers_that_saw_a_test_patient_or_say_nothing(tmp_path):
    bundle = load_weights(_weights(tmp_path, {"trained_on": ["TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222"]}))
    assert refuse_leak(bundle, "t", ["TCGA_CS_4943_20000902"]) == ["TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222"]
    with pytest.raises(LggsegError, match="t: trained on 1 of this fold's test patients"):
        refuse_leak(bundle, "t", ["TCGA_CS_4942_19970222"])
    with pytest.raises(LggsegError, match="do not record"):
        refuse_leak(load_weights(_weights(tmp_path, {})), "t", [])


def test_teacher_targets_average_the_teachers_slice_by_slice(tmp_path):
    torch.manual_seed(0)
    paths = []
    for k in range(2):
        path = tmp_path / f"t{k}.safetensors"
        save_weights(path, UNet(UNetConfig(base_width=4, depth=2)).eval(), info={"trained_on": ["TCGA_CS_4941"]})
        paths.append(path)
    rng = np.random.default_rng(0)
    volumes = [
        Volume(name, rng.integers(0, 255, (z, 32, 32, 3), dtype=np.uint8), np.zeros((z, 32, 32), bool), list(range(z)))
        for name, z in (("a", 3), ("b", 2))
    ]
    soft, record = teacher_targets(paths, volumes, ["TCGA_CS_4942"], log=lambda _: None)
    assert soft.shape == (5, 32, 32) and soft.dtype == torch.uint8
    assert [r["weights"] for r in record] == [str(p) for p in paths]
    from lggseg.infer.segmenter import Segmenter

    expected = np.concatenate(
        [np.mean([Segmenter(load_weights(p)).probabilities(v.images) for p in paths], 0) for v in volumes]
    )
    assert np.abs(soft.numpy() / SOFT_SCALE - expected).max() <= 0.5 / SOFT_SCALE + 1e-6
    assert soft.numpy().std() > 0  # real probabilities, not a constant
    with pytest.raises(LggsegError, match="no such weights file"):
        teacher_targets([tmp_path / "missing.safetensors"], volumes, [], log=lambda _: None)


def test_mix_and_bank_targets():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1:3, 1:3] = True
    bank = SliceBank.from_volumes([Volume("a", np.zeros((2, 4, 4, 3), np.uint8), masks, [1, 2])])
    idx = torch.tensor([0, 1])
    assert bank.targets(idx).shape == (2, 1, 4, 4)
    bank.soft = torch.full((2, 4, 4), 51, dtype=torch.uint8)  # 0.2
    targets = bank.targets(idx)
    assert targets.shape == (2, 2, 4, 4) and torch.allclose(targets[:, 1], torch.full((2, 4, 4), 0.2))
    mixed = mix_targets(targets, 0.25)
    assert torch.allclose(mixed[0, 0, 1, 1], torch.tensor(0.75 + 0.05)) and torch.allclose(mixed[1], torch.tensor(0.05))
