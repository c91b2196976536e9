from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lggseg.data.dataset import check_dataset, index_dataset, load_volume, resolve_root
from lggseg.errors import LggsegError


def test_index_sample_pairs_slices_numerically(sample_dir):
    index = index_dataset(sample_dir)
    assert len(index.patients) == 2
    patient = index.patients[0]
    assert [s.number for s in patient.slices] == list(range(1, 21))
    assert all(s.mask is not None and s.mask.name == f"{patient.name}_{s.number}_mask.tif" for s in patient.slices)
    assert patient.institution == "CS"
    assert index.problems == []


def test_parent_of_kaggle_3m_is_accepted(sample_dir):
    assert resolve_root(sample_dir.parent) == sample_dir


def test_single_patient_folder_is_accepted(sample_patient):
    index = index_dataset(sample_patient)
    assert [p.name for p in index.patients] == [sample_patient.name]


def test_load_volume_shapes(sample_dir):
    patient = index_dataset(sample_dir).patients[0]
    volume = load_volume(patient)
    assert volume.images.shape == (20, 256, 256, 3) and volume.images.dtype == np.uint8
    assert volume.masks.shape == (20, 256, 256) and volume.masks.dtype == bool
    assert volume.masks.any()


def test_check_counts_sample(sample_dir):
    report = check_dataset(sample_dir)
    assert (report.n_patients, report.n_slices, report.n_tumor_slices, report.n_empty_slices) == (2, 40, 17, 23)
    assert report.institutions == {"CS": 2}
    assert report.problems == []


def test_check_reports_problems_without_crashing(tiny_dataset: Path):
    patient = sorted(tiny_dataset.iterdir())[0]
    (patient / f"{patient.name}_3.tif").write_bytes(b"not an image at all")
    (patient / f"{patient.name}_99_mask.tif").write_bytes((patient / f"{patient.name}_1_mask.tif").read_bytes())
    (patient / ".DS_Store").write_bytes(b"\0\0")
    (patient / "notes.docx").write_bytes(b"x")
    report = check_dataset(tiny_dataset)
    text = "\n".join(report.problems)
    assert f"{patient.name}_3.tif: not a TIFF, PNG or JPEG image" in text
    assert "mask without an image" in text
    assert "notes.docx" in text
    assert ".DS_Store" not in text
    assert report.n_slices == 39


def test_resized_slices_are_reported_and_loaded_on_grid(tiny_dataset: Path):
    patient = sorted(tiny_dataset.iterdir())[0]
    image = np.asarray(Image.open(patient / f"{patient.name}_1.tif"))
    Image.fromarray(image).resize((300, 200)).save(patient / f"{patient.name}_1.tif")
    Image.fromarray(np.zeros((200, 300), np.uint8)).save(patient / f"{patient.name}_1_mask.tif")
    report = check_dataset(tiny_dataset)
    assert report.resized == 1
    volume = load_volume(index_dataset(patient).patients[0])
    assert volume.images.shape[1:] == (256, 256, 3)


def test_empty_and_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(LggsegError, match="no such folder"):
        index_dataset(tmp_path / "missing")
    with pytest.raises(LggsegError, match="no patient folders"):
        index_dataset(tmp_path)


def test_bad_file_in_load_names_the_file(tiny_dataset: Path):
    patient = sorted(tiny_dataset.iterdir())[0]
    bad = patient / f"{patient.name}_2.tif"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(LggsegError, match=f"{bad.name}: cannot decode"):
        load_volume(index_dataset(patient).patients[0])


@pytest.mark.slow  # reads all 3341 slices (about 30 s)
@pytest.mark.full_data
def test_full_data_check_counts(full_data):
    report = check_dataset(full_data)
    assert (report.n_patients, report.n_slices, report.n_tumor_slices) == (100, 3341, 1215)
    assert report.institutions == {"CS": 16, "DU": 39, "EZ": 1, "FG": 11, "HT": 33}
    assert report.problems == []


def test_slice_number_of_file_names():
    from lggseg.data.dataset import slice_number

    assert slice_number("TCGA_CS_4941_19960909_13.tif") == 13
    assert slice_number("P_7_mask.png") == 7 and slice_number("scan.tif") is None


def test_flair_only_presentation_is_one_function():
    from lggseg.data.dataset import FLAIR_ONLY_FILL, compose_channels, flair_only_fill, flair_only_images

    flair = np.arange(12, dtype=np.uint8).reshape(3, 4)
    repeated = flair_only_images(flair, "repeat")
    assert repeated.shape == (3, 4, 3) and all(np.array_equal(repeated[..., c], flair) for c in range(3))
    zeros = flair_only_images(flair, "zeros")
    assert np.array_equal(zeros[..., 1], flair) and not zeros[..., 0].any() and not zeros[..., 2].any()
    assert FLAIR_ONLY_FILL == "repeat"  # measured best for the shipped model (MODEL_CARD "Input kinds")
    assert flair_only_fill({"flair_only_fill": "zeros"}) == "zeros" and flair_only_fill({}) == "repeat"
    assert flair_only_fill({"flair_only_fill": "bogus"}) == "repeat"
    images, text = compose_channels(None, flair, None)
    assert np.array_equal(images, repeated) and text.startswith("FLAIR only")
    pre, post = flair + 100, flair + 200
    images, text = compose_channels(pre, flair, post)
    assert np.array_equal(images, np.stack([pre, flair, post], -1)) and text == "pre-contrast, FLAIR, post-contrast"
    images, text = compose_channels(pre, flair, None, fill="zeros")
    assert np.array_equal(images[..., 0], pre) and not images[..., 2].any() and "missing channel: zero" in text
    with pytest.raises(LggsegError, match="unknown FLAIR-only fill"):
        flair_only_images(flair, "mean")


def test_a_fifo_named_like_a_slice_is_skipped_not_opened(tiny_dataset):
    import os

    patient = sorted(tiny_dataset.iterdir())[0]
    os.mkfifo(patient / f"{patient.name}_99.tif")
    index = index_dataset(patient)
    assert [s.number for s in index.patients[0].slices] == list(range(1, 21))
    assert any("_99.tif: not a regular file, skipped" in p for p in index.problems)
