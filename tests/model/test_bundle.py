import pytest
import torch

from lggseg.errors import LggsegError
from lggseg.model.bundle import PostProcess, load_weights, save_weights, sha256_of, shipped_sha256, shipped_weights_path
from lggseg.model.unet import UNet, UNetConfig


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    model = UNet(UNetConfig(base_width=4, depth=2))
    path = tmp_path / "w.safetensors"
    save_weights(path, model, PostProcess(0.4, 100, False), "flip", {"fold": 0})
    bundle = load_weights(path)
    assert bundle.config == model.config
    assert bundle.post == PostProcess(0.4, 100, False) and bundle.tta == "flip" and bundle.info == {"fold": 0}
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value)


def test_shipped_model_loads_and_matches_its_hash():
    assert sha256_of(shipped_weights_path()) == shipped_sha256()
    bundle = load_weights(None)
    assert bundle.sha256 == shipped_sha256()


def test_wrong_hash_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2)))
    with pytest.raises(LggsegError, match="SHA-256"):
        load_weights(path, expected_sha256="0" * 64)


def test_run_folder_resolves_to_best(tmp_path):
    save_weights(tmp_path / "best.safetensors", UNet(UNetConfig(base_width=4, depth=2)))
    assert load_weights(tmp_path).path == tmp_path / "best.safetensors"
