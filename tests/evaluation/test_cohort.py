import numpy as np
import pytest

from lggseg.evaluation import cohort


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_patients():
    rng = np.random.default_rng(1)
    small = rng.uniform(0.6, 1.0, 20)
    large = rng.uniform(0.6, 1.0, 400)
    lo_s, hi_s = cohort.bootstrap_mean_interval(small)
    lo_l, hi_l = cohort.bootstrap_mean_interval(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)  # ~1/sqrt(20) of the width
    # the standard error of a uniform(0.6, 1.0) mean of 20 values is 0.026: a 95% interval is ~0.10 wide
    assert 0.07 < hi_s - lo_s < 0.14


def test_bootstrap_of_constant_values_is_that_value():
    assert cohort.bootstrap_mean_interval([0.8] * 10) == pytest.approx((0.8, 0.8))


def test_institution_and_group_rows():
    rows = [
        {
            "patient": "TCGA_CS_4941_19960909",
            "fold": 0,
            "dice": 0.9,
            "n_empty_slices": 10,
            "n_false_positive_slices": 1,
        },
        {
            "patient": "TCGA_CS_5393_19990606",
            "fold": 1,
            "dice": 0.5,
            "n_empty_slices": 10,
            "n_false_positive_slices": 0,
        },
        {"patient": "TCGA_DU_5849_19950405", "fold": 0, "dice": 0.7, "n_empty_slices": 0, "n_false_positive_slices": 0},
    ]
    assert cohort.institution(rows[2]["patient"]) == "DU"
    groups = cohort.group_rows(rows, lambda r: cohort.institution(r["patient"]), "institution")
    assert [g["institution"] for g in groups] == ["CS", "DU"]
    assert groups[0]["n_patients"] == 2 and groups[0]["mean_dice"] == pytest.approx(0.7)
    assert groups[0]["min_dice"] == 0.5 and groups[0]["false_positive_rate_empty_slices"] == pytest.approx(0.05)
    assert groups[1]["false_positive_rate_empty_slices"] is None


def test_size_rows_group_by_annotated_voxels_smallest_first():
    assert [cohort.size_group(v) for v in (0, 4_999, 5_000, 19_999, 20_000, 73_567)] == [
        "under 5k",
        "under 5k",
        "5k-10k",
        "10k-20k",
        "20k-40k",
        "40k and up",
    ]
    rows = [
        {"patient": "a", "dice": 0.9, "volume_true": 50_000},
        {"patient": "b", "dice": 0.4, "volume_true": 1_870},
        {"patient": "c", "dice": 0.6, "volume_true": 4_940},
        {"patient": "d", "dice": 0.8, "volume_true": 12_000},
    ]
    groups = cohort.size_rows(rows)
    assert [g["tumor_voxels"] for g in groups] == ["under 5k", "10k-20k", "40k and up"]  # not alphabetical
    assert groups[0]["n_patients"] == 2 and groups[0]["mean_dice"] == pytest.approx(0.5)


def test_headline_is_one_line_with_the_protocol_numbers():
    summary = {"n_patients": 81, "mean_dice": 0.84531, "median_dice": 0.8862, "min_dice": 0.3846}
    line = cohort.headline({**summary, "false_positive_rate_empty_slices": 0.0283})
    assert line == "81 patients, mean 0.845 median 0.886 min 0.385, FP 2.8%"


def test_paired_summary_counts_improvements_and_describes_itself():
    from lggseg.evaluation.cohort import bootstrap_mean_interval, paired_summary

    differences = [0.10, -0.05, 0.20, 0.0]
    summary = paired_summary(differences)
    assert summary.mean == pytest.approx(0.0625) and summary.n_better == 2 and summary.n == 4
    assert (summary.low, summary.high) == bootstrap_mean_interval(differences)
    assert summary.to_dict() == {"mean": summary.mean, "ci95": [summary.low, summary.high], "n_better": 2}
    assert summary.describe() == f"+0.062 ({summary.low:+.3f} to {summary.high:+.3f}), 2/4 better"
