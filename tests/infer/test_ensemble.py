import numpy as np
import pytest
import torch

from lggseg.infer.ensemble import EnsembleBackend, consensus_post, ensemble_members
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.model.bundle import PostProcess, save_weights
from lggseg.model.unet import UNet, UNetConfig


def _cv_folder(tmp_path, posts):
    for k, post in enumerate(posts):
        torch.manual_seed(k)
        model = UNet(UNetConfig(base_width=4, depth=2))
        run = tmp_path / "cv" / f"fold_{k}" / "run"
        run.mkdir(parents=True)
        save_weights(run / "best.safetensors", model.eval(), post, "none", {"fold": k})
    return tmp_path / "cv"


def test_members_of_a_cv_folder_in_fold_order_and_a_run_folder_is_one_model(tmp_path):
    cv = _cv_folder(tmp_path, [PostProcess(0.5)] * 3)
    assert [p.parent.parent.name for p in ensemble_members(cv)] == ["fold_0", "fold_1", "fold_2"]
    assert ensemble_members(cv / "fold_1" / "run") == []
    assert ensemble_members(tmp_path / "absent") == []


def test_consensus_is_the_majority_and_ties_go_to_the_simpler_rule():
    a, b, c = PostProcess(0.5), PostProcess(0.5, min_component=100), PostProcess(0.4, min_peak=0.9)
    assert consensus_post([b, b, a, c]) == b
    assert consensus_post([c, a]) == a  # one each: fewer cleanup rules wins
    assert consensus_post([PostProcess(0.5, 100), PostProcess(0.4, 100)]) == PostProcess(0.4, 100)


def test_ensemble_backend_averages_members():
    backend = EnsembleBackend(
        [lambda b: np.full((1, 1, 2, 2), 0.2, np.float32), lambda b: np.full((1, 1, 2, 2), 0.6, np.float32)]
    )
    assert backend(np.zeros((1, 3, 2, 2), np.float32)) == pytest.approx(np.full((1, 1, 2, 2), 0.4))


def test_segmenter_on_a_cv_folder_is_the_mean_of_its_folds(tmp_path):
    cv = _cv_folder(
        tmp_path, [PostProcess(0.5, min_component=100), PostProcess(0.5, min_component=100), PostProcess(0.4)]
    )
    config = InferenceConfig(bf16="off", device="cpu")
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    together = Segmenter.from_weights(cv, config)
    alone = [Segmenter.from_weights(cv / f"fold_{k}" / "run", config).probabilities(images) for k in range(3)]
    assert together.bundle.post == PostProcess(0.5, min_component=100)
    assert len(together.bundle.info["ensemble"]) == 3
    np.testing.assert_allclose(together.probabilities(images), np.mean(alone, axis=0), atol=1e-5)
    assert not np.allclose(alone[0], alone[1])  # the members really differ
