import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lggseg.errors import LggsegError
from lggseg.infer import ensemble
from lggseg.infer.ensemble import consensus_post, ensemble_members, load_ensemble, write_manifest
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.model.bundle import PostProcess, save_weights
from lggseg.model.unet import UNet, UNetConfig

CPU = InferenceConfig(bf16="off", device="cpu")


def _save(path: Path, seed: int, post: PostProcess = PostProcess(0.5), **config) -> Path:
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2, **config)).eval(), post, "none", {"fold": 0})
    return path


def _cv_folder(tmp_path, posts):
    for k, post in enumerate(posts):
        _save(tmp_path / "cv" / f"fold_{k}" / "run" / "best.safetensors", k, post)
    return tmp_path / "cv"


def _mixed_folder(tmp_path) -> tuple[Path, list[Path]]:
    """Two members that take different inputs: 3 channels, and 2.5D with one slice of context."""
    folder = tmp_path / "ens"
    files = [
        _save(folder / "plain.safetensors", 1, PostProcess(0.5, min_component=100)),
        _save(folder / "context.safetensors", 2, PostProcess(0.4), in_channels=9, context_slices=1),
    ]
    return folder, files


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


def test_segmenter_on_a_cv_folder_is_the_mean_of_its_folds(tmp_path):
    cv = _cv_folder(
        tmp_path, [PostProcess(0.5, min_component=100), PostProcess(0.5, min_component=100), PostProcess(0.4)]
    )
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    together = Segmenter.from_weights(cv, CPU)
    alone = [Segmenter.from_weights(cv / f"fold_{k}" / "run", CPU).probabilities(images) for k in range(3)]
    assert together.bundle.post == PostProcess(0.5, min_component=100)
    assert len(together.bundle.info["ensemble"]) == 3
    np.testing.assert_allclose(together.probabilities(images), np.mean(alone, axis=0), atol=1e-5)
    assert not np.allclose(alone[0], alone[1])  # the members really differ


def test_members_that_take_different_inputs_each_get_their_own(tmp_path):
    folder, files = _mixed_folder(tmp_path)
    images = np.random.default_rng(1).integers(0, 255, (5, 48, 40, 3), dtype=np.uint8)  # off-grid: resized
    together = Segmenter.from_weights(folder, CPU)
    alone = [Segmenter.from_weights(f, CPU).probabilities(images) for f in files]
    assert [m.config.context_slices for m, _ in together.members] == [1, 0]  # file name order
    np.testing.assert_allclose(together.probabilities(images), np.mean(alone, axis=0), atol=1e-5)
    assert together.segment(images).shape == (5, 48, 40)


def test_a_manifest_names_the_members_and_its_rule_replaces_the_consensus(tmp_path):
    folder, files = _mixed_folder(tmp_path)
    (folder / "stray.safetensors").write_bytes(files[0].read_bytes())  # not listed: not a member
    write_manifest(folder, files, ["TCGA_CS_4941_19960909"], "two toy members")
    assert ensemble_members(folder) == files
    bundle, members = load_ensemble(folder)
    assert bundle.post == PostProcess(0.4)  # uncalibrated: the consensus (a tie: fewer cleanup rules)
    chosen = PostProcess(0.5, min_component=500, min_extent=2, fill_holes=True)
    ensemble.set_manifest_rule(folder, chosen, {"val_mean_dice": 0.5})
    bundle, _ = load_ensemble(folder)
    assert bundle.post == chosen
    assert bundle.info["manifest"]["validation"] == ["TCGA_CS_4941_19960909"]
    assert [m["sha256"] for m in bundle.info["ensemble"]] == [m.sha256 for m in members]


def test_a_member_changed_after_the_manifest_was_written_is_refused(tmp_path):
    folder, files = _mixed_folder(tmp_path)
    write_manifest(folder, files, [])
    _save(files[1], 7, in_channels=9, context_slices=1)  # same architecture, other weights
    with pytest.raises(LggsegError, match="does not match the expected"):
        load_ensemble(folder)


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({"format": "other"}, "format must be"),
        ({"format": ensemble.FORMAT, "members": [{"file": "a.safetensors", "sha256": "0"}], "validation": []}, "two"),
        (
            {"format": ensemble.FORMAT, "members": [{"file": "../a.safetensors", "sha256": "0"}] * 2, "validation": []},
            "plain file name",
        ),
        ({"format": ensemble.FORMAT, "members": [{"file": "a.safetensors", "sha256": "0"}] * 2}, "validation"),
    ],
)
def test_a_bad_manifest_is_one_clear_error(tmp_path, manifest, message):
    (tmp_path / ensemble.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(LggsegError, match=message):
        ensemble_members(tmp_path)


def test_a_member_outside_the_folder_is_refused(tmp_path):
    folder, files = _mixed_folder(tmp_path)
    outside = _save(tmp_path / "elsewhere.safetensors", 3)
    with pytest.raises(LggsegError, match="must sit in the ensemble folder"):
        write_manifest(folder, [files[0], outside], [])
    assert not (folder / ensemble.MANIFEST).exists()


def test_the_packaged_accurate_ensemble_is_four_recipes_calibrated_on_validation_patients():
    manifest = ensemble.read_manifest(ensemble.accurate_path())
    bundle, members = load_ensemble(ensemble.accurate_path())  # every member hash-checked
    assert [(m.config.in_channels, m.config.base_width) for m in members] == [(9, 12), (3, 16), (15, 12), (9, 12)]
    assert {m.info["fold"] for m in members} == {0}
    assert len(manifest["validation"]) == 10
    assert manifest["calibration"]["validation_patients"] == manifest["validation"]
    assert bundle.post == PostProcess(**manifest["postprocess"])
    assert bundle.post.min_extent == 2 and not bundle.post.keep_largest
