import numpy as np
import pytest

from lggseg.model.bundle import PostProcess
from lggseg.train.calibrate import RULES, TIE, RuleScore, score, select_rule


def _scores(*rows: tuple[float, int]) -> list[RuleScore]:
    """(mean Dice, false-positive slices) for RULES[0], RULES[1], ... in order."""
    return [RuleScore(RULES[i], dice, fp, 100) for i, (dice, fp) in enumerate(rows)]


def test_select_rule_picks_the_best_rule():
    scores = _scores((0.80, 0), (0.83, 0), (0.86, 9), (0.84, 0))
    assert select_rule(scores) == scores[2]  # Dice first: more false positives do not outweigh it


def test_a_dice_tie_goes_to_fewer_false_positive_slices_then_to_the_rule_listed_first():
    within = TIE / 2
    scores = _scores((0.80, 0), (0.85 - within, 3), (0.85, 3), (0.85 - within, 1), (0.85, 1))
    assert select_rule(scores) == scores[3]  # ties on Dice and on false positives: the simpler one
    same_fp = _scores((0.80, 0), (0.85 - within, 2), (0.85, 2))
    assert select_rule(same_fp) == same_fp[1]
    beyond = _scores((0.80, 0), (0.85 - 2 * TIE, 0), (0.85, 5))
    assert select_rule(beyond) == beyond[2]


def test_select_rule_needs_rules():
    with pytest.raises(ValueError):
        select_rule([])


def test_rules_start_with_the_plain_threshold_never_keep_the_largest_and_stay_few():
    assert RULES[0] == PostProcess(0.5)
    assert not any(rule.keep_largest for rule in RULES)
    assert len(RULES) <= 10 and len(set(RULES)) == len(RULES)
    steps = [rule.n_rules for rule in RULES]
    assert steps == sorted(steps)  # simplest first: ties go to the rule with fewer steps
    assert {rule.min_end_core for rule in RULES} == {0, 100, 150}
    assert not RULES[0].fill_holes and all(rule.fill_holes for rule in RULES[1:])  # every cleanup fills holes
    assert RULES[0].min_extent == 0 and all(rule.min_extent in (2, 3) for rule in RULES[1:])  # and drops 1-slice blobs


def test_score_is_the_mean_per_patient_dice_and_the_false_positive_slices_after_the_rule():
    truth = np.zeros((4, 16, 16), bool)
    truth[1:3, 4:10, 4:10] = True
    prob = np.where(truth, 0.95, 0.0).astype(np.float32)
    prob[0, 0, 0] = 0.6  # a one-voxel false positive on a tumor-free slice
    noisy = score([prob], [truth], PostProcess(0.5))
    cleaned = score([prob], [truth], PostProcess(0.5, min_component=2))
    assert cleaned.mean_dice == 1.0 and noisy.mean_dice < 1.0
    assert (noisy.false_positive_slices, cleaned.false_positive_slices, noisy.empty_slices) == (1, 0, 2)
    assert score([prob], [truth], PostProcess(0.5, min_slice_area=2)).false_positive_slices == 0
    twice = score([prob, prob], [truth, truth], PostProcess(0.5))
    assert twice.mean_dice == pytest.approx(noisy.mean_dice) and twice.false_positive_slices == 2
    assert noisy.to_dict()["val_false_positive_rate_empty_slices"] == 0.5


def _toy_members(folder, trained_on):
    import torch

    from lggseg.model.bundle import save_weights
    from lggseg.model.unet import UNet, UNetConfig

    files = []
    for k, (context, seen) in enumerate(zip((0, 1), trained_on)):
        torch.manual_seed(k)
        model = UNet(UNetConfig(base_width=4, depth=2, in_channels=3 * (2 * context + 1), context_slices=context))
        files.append(folder / f"m{k}.safetensors")
        save_weights(files[-1], model.eval(), info={"fold": 0, "trained_on": seen})
    return files


def test_an_ensemble_is_calibrated_on_its_validation_patients_for_the_mean_of_its_members(tmp_path, tiny_dataset):
    from lggseg.data.dataset import index_dataset
    from lggseg.infer import ensemble
    from lggseg.train.calibrate import RULES, recalibrate

    names = [p.name for p in index_dataset(tiny_dataset).patients]
    folder = tmp_path / "ens"
    folder.mkdir()
    ensemble.write_manifest(folder, _toy_members(folder, [names, names]), names)
    report = recalibrate(folder, tiny_dataset, log=lambda _: None)  # dispatches on ensemble.json
    manifest = ensemble.read_manifest(folder)
    assert manifest["calibration"]["validation_patients"] == names
    assert len(manifest["calibration"]["grid"]) == len(RULES)
    chosen = {k: v for k, v in report["chosen"].items() if k in manifest["postprocess"]}
    assert chosen == manifest["postprocess"]
    assert ensemble.load_ensemble(folder)[0].post.to_dict() == manifest["postprocess"]


def test_an_ensemble_rule_is_never_chosen_on_a_patient_some_member_did_not_train_on(tmp_path, tiny_dataset):
    from lggseg.data.dataset import index_dataset
    from lggseg.errors import LggsegError
    from lggseg.infer import ensemble
    from lggseg.train.calibrate import calibrate_ensemble

    names = [p.name for p in index_dataset(tiny_dataset).patients]
    folder = tmp_path / "ens"
    folder.mkdir()
    ensemble.write_manifest(folder, _toy_members(folder, [names, names[:1]]), names)
    with pytest.raises(LggsegError, match=f"m1.safetensors: never saw validation patient\\(s\\) {names[1]}"):
        calibrate_ensemble(folder, tiny_dataset, log=lambda _: None)
    assert "postprocess" not in ensemble.read_manifest(folder)
