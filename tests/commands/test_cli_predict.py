"""``lggseg predict`` as a user meets it: messages, exit codes, and progress in a log file."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from lggseg.commands.cli import main
from lggseg.commands.reporting import LineReporter, make_reporter
from lggseg.evaluation import metrics
from lggseg.io.images import read_mask
from lggseg.io.nifti import from_nifti_axes
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.version import __version__


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2)))
    return path


def test_version(capsys):
    code, out, err = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"lggseg {__version__}" and err == ""


def test_empty_out_is_refused(capsys, sample_patient):
    code, _, err = run(["predict", str(sample_patient), "--out", ""], capsys)
    assert code == 2 and err.strip() == "error: --out must name a folder (got an empty string)"


@pytest.mark.parametrize("value", ["0", "1", "nan", "-0.2"])
def test_threshold_outside_0_1_is_refused(capsys, sample_patient, tmp_path, value):
    code, _, err = run(["predict", str(sample_patient), "--out", str(tmp_path), "--threshold", value], capsys)
    assert code == 2 and "--threshold must be a probability strictly between 0 and 1" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["3,0.9", "a,b,c", "3,0,1", "3,1,inf"])
def test_bad_spacing_is_refused(capsys, sample_patient, tmp_path, value):
    code, _, err = run(["predict", str(sample_patient), "--out", str(tmp_path), "--spacing", value], capsys)
    assert code == 2 and "--spacing must be three positive numbers in mm" in err


def test_unusable_weights_leave_no_output_folder(capsys, sample_patient, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not a safetensors file")
    out = tmp_path / "new" / "o"
    code, _, err = run(["predict", str(sample_patient), "--out", str(out), "--weights", str(weights)], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()  # both folders it made are gone
    kept = tmp_path / "kept"
    (kept / "earlier").mkdir(parents=True)
    code, _, _ = run(["predict", str(sample_patient), "--out", str(kept), "--weights", str(weights)], capsys)
    assert code == 2 and (kept / "earlier").is_dir()  # a folder that was there stays as it was
    empty = tmp_path / "empty"
    empty.mkdir()
    detour = tmp_path / "a" / ".." / "empty"  # reaches the user's empty folder through a new one
    code, _, _ = run(["predict", str(sample_patient), "--out", str(detour), "--weights", str(weights)], capsys)
    assert code == 2 and empty.is_dir() and not (tmp_path / "a").exists()


def test_a_mask_file_is_named_ground_truth(capsys, sample_patient, tmp_path):
    mask = sample_patient / f"{sample_patient.name}_13_mask.tif"
    code, _, err = run(["predict", str(mask), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip() == (
        f"error: {mask}: a mask file is ground truth, not a scan; pass the image ({sample_patient.name}_13.tif): "
        "a mask beside it is used to report Dice"
    )


def test_pre_without_flair_is_refused(capsys, tmp_path):
    code, _, err = run(["predict", "--pre", str(tmp_path / "t1.nii.gz"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no inputs given" in err


def test_a_single_slice_reports_area_dice_its_number_and_a_note(capsys, sample_patient, tmp_path, tiny_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    for suffix in ("", "_mask"):
        shutil.copy(sample_patient / f"{sample_patient.name}_13{suffix}.tif", folder)
    image = folder / f"{sample_patient.name}_13.tif"
    out = tmp_path / "out"
    args = ["predict", str(image), "--out", str(out), "--weights", str(tiny_weights), "--spacing", "5,0.5,0.5"]
    args += ["--threshold", "0.45", "--save-probabilities"]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    line = stdout.splitlines()[0]
    assert re.fullmatch(
        rf"\[1/1\] {image.stem}: tumor area (\d+) pixels \(([\d.]+) mm2\), Dice ([\d.]+) "
        r"\(unknown whether this model saw the patient\)  \(\d+ s\)",
        line,
    ), line  # the tiny weights record neither their fold nor their patients
    area, mm2, dice = re.search(r"area (\d+) pixels \(([\d.]+) mm2\), Dice ([\d.]+)", line).groups()
    predicted = np.asarray(Image.open(out / "slices" / "masks" / f"{image.stem}_mask.png")) > 0
    truth = read_mask(folder / f"{sample_patient.name}_13_mask.tif")
    assert int(area) == predicted.sum() and float(mm2) == pytest.approx(predicted.sum() * 0.25, abs=0.05)
    assert float(dice) == pytest.approx(metrics.dice(predicted, truth), abs=5e-4)
    assert "volume" not in line and "voxels" not in line
    assert "normalised with their own intensity statistics" in err
    (row,) = list(csv.DictReader((out / "summary.csv").open()))
    assert row["slice"] == "13" and row["case_dice"] == f"{metrics.dice(predicted, truth):.4f}"
    assert row["case_dice_note"] == "unknown whether this model saw the patient"
    assert row["threshold"] == "0.45" and row["case_tumor_volume_ml"] == ""  # a slice has an area, not a volume
    record = json.loads((out / "slices" / f"{image.stem}.json").read_text())
    assert record["threshold"] == 0.45 and record["tumor"]["area_mm2"] == pytest.approx(float(mm2), abs=0.05)
    prob = nib.load(str(out / "slices" / "probabilities" / f"{image.stem}_probability.nii.gz"))
    assert prob.shape == (256, 256, 1) and prob.get_data_dtype() == np.float32
    assert np.array_equal(from_nifti_axes(np.asarray(prob.dataobj))[0] > 0.45, predicted)


@pytest.mark.slow  # a subprocess (torch import) on 2 busy cores
def test_progress_in_a_log_file_is_one_line_per_case(tmp_path, sample_dir, tiny_weights):
    """Off a terminal: no bar, no control characters, no blank lines; each case's line as it finishes."""
    log = tmp_path / "log.txt"
    with log.open("w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "lggseg", "predict", str(sample_dir), "--out", str(tmp_path / "out"),
             "--weights", str(tiny_weights)],
            stdout=handle, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    names = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    assert len(lines) == 3 and all(line.strip() for line in lines)
    for k, (line, name) in enumerate(zip(lines, names), start=1):
        assert line.startswith(f"[{k}/2] {name}: tumor volume "), line
    assert lines[2].startswith("outputs in ")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log.read_text())


def test_the_reporter_follows_the_terminal():
    assert type(make_reporter(terminal=False)) is LineReporter
    assert type(make_reporter(terminal=True)).__name__ == "TerminalReporter"


def test_a_dice_of_a_training_patient_says_so(capsys, sample_patient, tmp_path):
    """Issue 10: no Dice of a patient the weights trained on may pass for a test result."""
    from lggseg.model.bundle import load_weights

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(weights, UNet(UNetConfig(base_width=4, depth=2)), info={"trained_on": [sample_patient.name]})
    out = tmp_path / "out"
    code, stdout, err = run(["predict", str(sample_patient), "--out", str(out), "--weights", str(weights)], capsys)
    assert code == 0, err
    assert "Dice" in stdout and "(TRAINING patient of this model: optimistic, not a test result)" in stdout
    record = json.loads((out / sample_patient.name / f"{sample_patient.name}.json").read_text())
    assert record["dice_note"] == "TRAINING patient of this model: optimistic, not a test result"
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert row["case_dice_note"] == record["dice_note"]
    held_out = tmp_path / "held_out.safetensors"
    bundle = load_weights(weights)
    save_weights(held_out, bundle.model, info={"trained_on": ["TCGA_XX_0000_20000101"]})
    code, stdout, _ = run(
        ["predict", str(sample_patient), "--out", str(tmp_path / "o2"), "--weights", str(held_out)], capsys
    )
    assert code == 0 and "(held out: this model never saw the patient)" in stdout
