import pytest

from lggseg.data.splits import NO_TEST_FOLD, canonical_folds, fold_of, patient_key, split_for_fold
from lggseg.errors import LggsegError


def test_canonical_split_covers_110_patients_once():
    folds = canonical_folds()
    names = [p for f in folds for p in f]
    assert len(folds) == 5
    assert len(names) == 110 and len(set(names)) == 110
    assert all(len(f) == 22 for f in folds)


def test_split_is_stratified_by_institution():
    folds = canonical_folds()
    for inst, total in {"CS": 16, "DU": 45, "FG": 14, "HT": 34}.items():
        counts = [sum(p.split("_")[1] == inst for p in f) for f in folds]
        assert sum(counts) == total
        assert max(counts) - min(counts) <= 1, (inst, counts)


def test_split_for_fold_disjoint_and_skips_absent():
    everyone = [p for f in canonical_folds() for p in f]
    available = everyone[:-7]
    split = split_for_fold(available, fold=2, n_validation=5, seed=0)
    assert split.skipped == 7
    assert not set(split.train) & set(split.validation)
    assert not (set(split.train) | set(split.validation)) & set(split.test)
    assert set(split.test) <= set(canonical_folds()[2])
    assert len(split.validation) == 5
    assert len(split.train) + len(split.validation) + len(split.test) == len(available)


def test_validation_comes_from_training_folds_and_is_seeded():
    everyone = [p for f in canonical_folds() for p in f]
    a = split_for_fold(everyone, 0, 8, seed=1)
    b = split_for_fold(everyone, 0, 8, seed=1)
    assert a == b
    assert not set(a.validation) & set(canonical_folds()[0])


def test_unknown_patients_are_listed_not_used():
    everyone = [p for f in canonical_folds() for p in f] + ["my_patient"]
    split = split_for_fold(everyone, 0, 4)
    assert split.unknown == ("my_patient",)
    assert "my_patient" not in split.train + split.validation + split.test


def test_bad_fold_is_a_user_error():
    with pytest.raises(LggsegError, match="--fold"):
        split_for_fold(["TCGA_CS_4941_19960909"], 7, 1)


def test_patient_key_and_fold_of():
    assert patient_key("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
    assert fold_of("TCGA_CS_4944_20010208") == 0
    assert fold_of("not_a_tcga_name") is None


def test_no_test_fold_trains_on_every_patient():
    everyone = [p for f in canonical_folds() for p in f]
    split = split_for_fold(everyone, NO_TEST_FOLD, 10, seed=0)
    assert split.test == ()
    assert len(split.train) == 100 and len(split.validation) == 10
    assert set(split.train) | set(split.validation) == set(everyone)
    with pytest.raises(LggsegError, match="--fold"):
        split_for_fold(everyone, -2, 1)


def test_holdout_patients_are_tested_never_trained():
    everyone = [p for f in canonical_folds() for p in f]
    demo = ["TCGA_CS_4944_20010208", "TCGA_CS_6667_20011105"]
    final = split_for_fold(everyone, NO_TEST_FOLD, 10, seed=0, holdout=demo)
    assert final.test == tuple(sorted(demo))
    assert len(final.train) + len(final.validation) == len(everyone) - 2
    assert not set(demo) & (set(final.train) | set(final.validation))
    # a holdout patient of another fold joins that fold's test patients
    other = next(p for p in canonical_folds()[1])
    split = split_for_fold(everyone, 0, 8, seed=0, holdout=[other])
    assert other in split.test and set(canonical_folds()[0]) <= set(split.test)
    assert other not in split.train + split.validation
