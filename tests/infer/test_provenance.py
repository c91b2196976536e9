from lggseg.data.splits import canonical_folds
from lggseg.infer.provenance import provenance_note, seen_in_training

FOLD0 = canonical_folds()[0][0]
FOLD1 = canonical_folds()[1][0]


def test_fold_weights_saw_the_other_folds_only():
    info = {"fold": 0}
    assert seen_in_training(info, FOLD0) is False
    assert seen_in_training(info, FOLD1) is True
    assert seen_in_training(info, "some_scan_from_elsewhere") is None


def test_explicit_patient_list_wins_and_ignores_the_scan_date():
    info = {"fold": 0, "trained_on": [FOLD0]}
    assert seen_in_training(info, FOLD0) is True
    assert seen_in_training(info, FOLD1) is False
    if FOLD0.startswith("TCGA_"):
        assert seen_in_training(info, "_".join(FOLD0.split("_")[:3]) + "_20200101") is True


def test_an_ensemble_saw_what_any_member_saw():
    info = {"ensemble": [{"info": {"fold": 0}}, {"info": {"fold": 1}}]}
    assert seen_in_training(info, FOLD0) is True  # member 1 trained on fold 0
    assert seen_in_training({"ensemble": [{"info": {"fold": 0}}]}, FOLD0) is False
    assert "TRAINING" in provenance_note(info, FOLD0)
    assert "never saw" in provenance_note({"fold": 0}, FOLD0)
    assert "unknown" in provenance_note({}, FOLD0)
