"""User errors: one line on stderr, exit status 2, no traceback, nothing half-written."""

import subprocess
import sys

import pytest

from lggseg.commands.cli import main
from lggseg.data.bundled import sample_root

SAMPLE = str(sample_root())


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "check", "/no/such/folder"], "no such folder"),
        (["predict", "/no/such/file.tif", "--out", "OUT"], "no such file"),
        (["train", "--frobnicate"], "No such option"),
        (["evaluate", "--data", "/no/such/folder", "--out", "OUT"], "no such folder"),
        (["evaluate", "--data", SAMPLE, "--out", "OUT", "--weights", "/no/such.safetensors"], "not found"),
        (["train", "--data", "/no/such/folder", "--out", "OUT", "--epochs", "0"], "epochs must be >= 1"),
        (["nonsense-command"], "No such command"),
        (["predict", SAMPLE, "--out", "OUT", "--accurate", "--weights", "W"], "--accurate and --weights"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err


def test_text_file_named_tif(tmp_path, capsys):
    bad = tmp_path / "scan.tif"
    bad.write_text("this is not an image")
    code, _, err = run(["predict", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{bad}: not a TIFF, PNG or JPEG image" in err


def test_empty_folder_is_user_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["data", "check", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no patient folders" in err


def test_data_check_prints_counts(sample_dir, capsys):
    code, out, _ = run(["data", "check", str(sample_dir)], capsys)
    assert code == 0
    assert "patients:           2" in out and "slices:             40" in out and "slices with tumor:  17" in out


def test_mask_without_image_is_reported(tiny_dataset, capsys):
    patient = sorted(tiny_dataset.iterdir())[0]
    (patient / f"{patient.name}_7.tif").unlink()
    code, out, _ = run(["data", "check", str(tiny_dataset)], capsys)
    assert code == 0 and "mask without an image" in out


def test_no_traceback_from_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lggseg", "predict", str(tmp_path / "x.png"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_existing_outputs_survive_a_failed_run(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "summary.csv"
    keep.write_text("earlier results\n")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    code, _, err = run(["predict", str(bad), "--out", str(out)], capsys)
    assert code == 2
    assert keep.read_text() == "earlier results\n"
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_two_inputs_with_the_same_stem_do_not_overwrite_each_other(sample_patient, tmp_path, capsys):
    from PIL import Image

    source = sample_patient / f"{sample_patient.name}_10.tif"
    (tmp_path / "in").mkdir()
    png = tmp_path / "in" / "scan.png"
    tif = tmp_path / "in" / "scan.tif"
    Image.open(source).save(png)
    tif.write_bytes(source.read_bytes())
    code, _, _ = run(["predict", str(png), str(tif), "--out", str(tmp_path / "out")], capsys)
    assert code == 0
    masks = sorted(p.name for p in (tmp_path / "out" / "slices" / "masks").iterdir())
    assert masks == ["scan_png_mask.png", "scan_tif_mask.png"]
