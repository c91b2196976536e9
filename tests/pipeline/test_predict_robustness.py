"""``predict`` against hostile paths and files (issue 12): one ``error:`` line each, nothing lost.

A tiny untrained model keeps these fast: they test what is written and refused, not accuracy.
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import resource
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lggseg.errors import LggsegError
from lggseg.infer.backends import TorchBackend
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.model.bundle import load_weights, save_weights
from lggseg.model.unet import UNet, UNetConfig
from lggseg.pipeline import outputs
from lggseg.pipeline.predict import predict


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(path, UNet(UNetConfig(base_width=4, depth=2)))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path) -> Segmenter:
    bundle = load_weights(tiny_weights)
    return Segmenter(bundle, TorchBackend(bundle, bf16="off"), InferenceConfig())


@pytest.fixture()
def small_patient(tmp_path: Path, sample_patient: Path) -> Path:
    """4 slices of a sample patient (with masks), in a writable folder named like the patient."""
    folder = tmp_path / "in" / sample_patient.name
    folder.mkdir(parents=True)
    for n in range(11, 15):
        for suffix in ("", "_mask"):
            shutil.copy(sample_patient / f"{sample_patient.name}_{n}{suffix}.tif", folder)
    return folder


def quiet(message: str) -> None:
    return None


def hidden(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


def cli(args: list[str], limit_bytes: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m lggseg ARGS`` in a subprocess, optionally with RLIMIT_FSIZE (a full disk)."""

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "lggseg", *args], capture_output=True, text=True, timeout=timeout, preexec_fn=limit
    )


def one_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any(all(n in line for n in needles) for line in errors), result.stderr


# --- the output folder -----------------------------------------------------------------------


def test_out_that_is_a_file_is_refused_before_the_model_loads(tmp_path, small_patient):
    (tmp_path / "out").write_text("x")
    with pytest.raises(LggsegError, match="exists and is not a folder"):
        predict([small_patient], tmp_path / "out", weights=tmp_path / "absent.safetensors", log=quiet)


def test_out_that_cannot_be_created(tmp_path, small_patient, tiny):
    with pytest.raises(LggsegError, match=r"/proc/self/lggseg-out: cannot write the output folder"):
        predict([small_patient], "/proc/self/lggseg-out", segmenter=tiny, log=quiet)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_that_is_not_writable(tmp_path, small_patient, tiny):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    with pytest.raises(LggsegError, match="cannot write the output folder"):
        predict([small_patient], out, segmenter=tiny, log=quiet)


def test_summary_that_is_a_folder_and_slices_that_is_a_file(tmp_path, small_patient, tiny):
    out = tmp_path / "out"
    (out / "summary.csv").mkdir(parents=True)
    with pytest.raises(LggsegError, match="summary.csv: exists and is not a regular file"):
        predict([small_patient], out, segmenter=tiny, log=quiet)
    (out / "summary.csv").rmdir()
    (out / "slices").write_text("x")
    one_slice = small_patient / f"{small_patient.name}_12.tif"
    with pytest.raises(LggsegError, match="slices: exists and is not a folder"):
        predict([one_slice], out, segmenter=tiny, log=quiet)
    report = predict([small_patient], out, segmenter=tiny, log=quiet)  # no slice input: out/slices is not needed
    assert len(report.cases) == 1 and not report.failures


@pytest.mark.slow  # a subprocess (torch import) on 2 busy cores
def test_full_disk_fails_that_case_only_and_leaves_no_partial_folder(tmp_path, small_patient, tiny_weights):
    """RLIMIT_FSIZE 100 kB: the patient's FLAIR NIfTI (~140 kB) cannot be written; the slice (<50 kB each) can."""
    one_slice = small_patient.parent / "alone_7.tif"
    shutil.copy(small_patient / f"{small_patient.name}_12.tif", one_slice)
    out = tmp_path / "out"
    args = ["predict", str(small_patient), str(one_slice), "--out", str(out), "--weights", str(tiny_weights)]
    result = cli(args, limit_bytes=100_000)
    one_error(result, f"{out / small_patient.name}", "cannot write (File too large)")
    assert not (out / small_patient.name).exists() and hidden(out) == []
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["case"], r["slice"]) for r in rows] == [("alone_7", "7")]
    assert (out / "slices" / "masks" / "alone_7_mask.png").is_file()


def test_no_space_left_stops_the_run_and_keeps_what_was_done(tmp_path, small_patient, tiny, monkeypatch):
    other = small_patient.parent / "P2"
    shutil.copytree(small_patient, other)
    out = tmp_path / "out"
    predict([small_patient], out, segmenter=tiny, log=quiet)
    calls = {"n": 0}
    real = outputs.nifti.save_volume

    def full_after_first_case(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first case's mask and FLAIR are written
            raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(outputs.nifti, "save_volume", full_after_first_case)
    lines: list[str] = []
    report = predict([other, small_patient, small_patient], out, segmenter=tiny, log=lines.append)
    assert [c.name for c in report.cases] == ["P2"] and report.not_processed == 1
    assert "No space left on device" in report.failures[0]
    assert any("1 input(s) not processed" in line for line in lines)
    assert (out / small_patient.name / f"{small_patient.name}_mask.nii.gz").is_file()  # the earlier run's folder
    assert hidden(out) == [] and {r["case"] for r in csv.DictReader((out / "summary.csv").open())} == {"P2"}


def test_case_folder_is_complete_or_absent(tmp_path, small_patient, tiny, monkeypatch):
    out = tmp_path / "out"
    predict([small_patient], out, segmenter=tiny, log=quiet)
    before = sorted(p.relative_to(out) for p in (out / small_patient.name).rglob("*"))
    assert len(before) == 2 + 4 + 4 + 3  # masks/, overlays/, 4 + 4 PNGs, mask + FLAIR NIfTI, JSON

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(outputs.nifti, "save_volume", broken)
    report = predict([small_patient], out, segmenter=tiny, log=quiet)
    assert report.failures and "Input/output error" in report.failures[0]
    assert sorted(p.relative_to(out) for p in (out / small_patient.name).rglob("*")) == before  # the old one stays
    assert hidden(out) == []


# --- inputs ----------------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess (torch import) on 2 busy cores
def test_dev_zero_and_a_fifo_are_refused_without_being_opened(tmp_path, tiny_weights):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    args = ["predict", "/dev/zero", str(fifo), "--out", str(tmp_path / "out"), "--weights", str(tiny_weights)]
    result = cli(args, timeout=60)
    for path in ("/dev/zero", str(fifo)):
        one_error(result, path, "not a regular file")
    assert result.stderr.strip().splitlines()[-1] == "error: none of the 2 inputs can be used"


def test_a_fifo_inside_a_patient_folder_is_skipped(tmp_path, small_patient, tiny):
    os.mkfifo(small_patient / f"{small_patient.name}_20.tif")
    lines: list[str] = []
    report = predict([small_patient], tmp_path / "out", segmenter=tiny, log=lines.append)
    assert len(report.cases) == 1 and not report.failures
    assert any("_20.tif: not a regular file, skipped" in line for line in lines)


def test_duplicate_folder_names_get_distinct_outputs(tmp_path, sample_dir, tiny):
    patients = sorted(p for p in sample_dir.iterdir() if p.is_dir())
    for letter, patient in zip("AB", patients):
        target = tmp_path / f"dup{letter}" / "P"
        shutil.copytree(patient, target)
        for path in target.iterdir():  # keep 3 slices each: fast
            if not any(path.name.startswith(f"{patient.name}_{n}") for n in ("10", "11", "12")):
                path.unlink()
            else:
                path.rename(target / path.name.replace(patient.name, "P"))
    report = predict([tmp_path / "dupA" / "P", tmp_path / "dupB" / "P"], tmp_path / "out", segmenter=tiny, log=quiet)
    assert [c.name for c in report.cases] == ["P", "P-2"]
    flair = [nib.load(str(tmp_path / "out" / n / f"{n}_flair.nii.gz")).get_fdata() for n in ("P", "P-2")]
    assert not np.array_equal(flair[0], flair[1])  # each holds its own patient
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["case"] for r in rows] == ["P"] * 3 + ["P-2"] * 3
    assert {r["source"].split(os.sep)[-3] for r in rows} == {"dupA", "dupB"}


def header_only_nifti(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4)
    return path


def zeros_nifti(path: Path, shape: tuple[int, int, int]) -> Path:
    """A ``.nii.gz`` of real uint8 zeros, built from repeated gzip members (a ~1 MB file for 1 GiB)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    chunk = 1 << 24
    total = int(np.prod(shape))
    assert total % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = compressor.compress(b"\0" * chunk) + compressor.flush()
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header.binaryblock + b"\0" * 4))
        for _ in range(total // chunk):
            handle.write(member)
    return path


@pytest.mark.slow  # a subprocess (torch import) on 2 busy cores
def test_nifti_headers_that_claim_too_much_are_refused_and_the_batch_goes_on(tmp_path, small_patient, tiny_weights):
    bomb = header_only_nifti(tmp_path / "bomb.nii.gz", (2048, 2048, 2048))
    real = zeros_nifti(tmp_path / "zeros.nii.gz", (2048, 2048, 256))
    assert bomb.stat().st_size < 200 and real.stat().st_size < 1_500_000
    out = tmp_path / "out"
    args = ["predict", str(bomb), str(small_patient), str(real), "--out", str(out), "--weights", str(tiny_weights)]
    result = cli(args, timeout=120)
    one_error(result, "bomb.nii.gz", "(2048, 2048, 2048)", "refused")
    one_error(result, "zeros.nii.gz", "(2048, 2048, 256)", "refused")
    assert f"[2/3] {small_patient.name}: tumor volume" in result.stdout
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["case"] for r in rows} == {small_patient.name} and len(rows) == 4
    assert "error: 2 input(s) failed, 1 succeeded" in result.stderr


def test_one_bad_input_never_loses_the_others(tmp_path, small_patient, tiny):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    one_slice = small_patient / f"{small_patient.name}_13.tif"
    report = predict([one_slice, bad, small_patient], tmp_path / "out", segmenter=tiny, log=quiet)
    assert [c.name for c in report.cases] == [one_slice.stem, small_patient.name]
    assert len(report.failures) == 1 and "bad.png" in report.failures[0]
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["case"] for r in rows] == [one_slice.stem] + [small_patient.name] * 4


def test_summary_grows_as_cases_finish(tmp_path, small_patient, tiny):
    seen: list[int] = []
    out = tmp_path / "out"

    class Recorder:
        def start(self, total: int) -> None:
            assert total == 3

        def done(self, case) -> None:
            seen.append(len((out / "summary.csv").read_text().splitlines()) - 1)

        def failed(self, message: str) -> None:
            raise AssertionError(message)

        def note(self, message: str) -> None:
            return None

        def close(self) -> None:
            return None

    slices = [small_patient / f"{small_patient.name}_{n}.tif" for n in (11, 12)]
    predict([small_patient, *slices], out, segmenter=tiny, reporter=Recorder())
    assert seen == [4, 5, 6]  # rows on disk when each case was reported
