"""DICOM series in, DICOM SEG out: synthetic series built with pydicom, and a real Kaggle slice stack."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

import lggseg.errors
from lggseg.errors import LggsegError
from lggseg.io.dicom import read_series, write_seg
from lggseg.io.orientation import from_canonical, orientation_warning, to_canonical

pydicom = pytest.importorskip("pydicom")  # the optional extra "dicom"
hd = pytest.importorskip("highdicom")
Dataset, FileMetaDataset = pydicom.dataset.Dataset, pydicom.dataset.FileMetaDataset
ExplicitVRLittleEndian, JPEG2000Lossless = pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.JPEG2000Lossless
MRImageStorage, generate_uid = pydicom.uid.MRImageStorage, pydicom.uid.generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows run to patient-left, columns posterior: normal superior
ORIGIN = np.array([-101.5, -87.25, 23.0])  # LPS mm
PIXEL_SPACING = (0.8, 0.9)  # (between rows, between columns): unequal so a swap is caught
STEP = 3.0


def make_slice(
    pixels: np.ndarray,
    position: np.ndarray,
    *,
    iop: tuple[float, ...] = AXIAL,
    study: str,
    series: str,
    frame_of_reference: str,
    number: int,
    spacing: tuple[float, float] = PIXEL_SPACING,
) -> Dataset:
    """One MR Image Storage instance with the tags a scanner writes (uint16, explicit VR LE)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
    ds.Modality, ds.Manufacturer, ds.SeriesDescription = "MR", "Test", "AX T2 FLAIR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "LGG0001", "19600101", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20010208", "120000", "1", "A1"
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 3, number
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.PixelSpacing = [f"{v:g}" for v in spacing]
    ds.SliceThickness = f"{STEP:g}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def write_series(
    folder: Path,
    stack: np.ndarray,
    *,
    iop: tuple[float, ...] = AXIAL,
    positions: list[np.ndarray] | None = None,
    series: str | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Write ``stack[k]`` (rows, cols) at ``positions[k]`` in shuffled file order; return the UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(iop[:3], iop[3:])
    if positions is None:
        positions = [ORIGIN + k * STEP * normal for k in range(len(stack))]
    uids = {"study": generate_uid(), "series": series or generate_uid(), "frame_of_reference": generate_uid()}
    order = list(range(len(stack)))
    random.Random(seed).shuffle(order)
    for n, k in enumerate(order):  # file names and InstanceNumbers say nothing about the slice order
        ds = make_slice(stack[k], positions[k], iop=iop, number=n + 1, **uids)
        ds.save_as(folder / f"IM{n:04d}", enforce_file_format=True)
    (folder / "README.txt").write_text("not a DICOM file\n")
    return uids


def phantom(z: int = 8, rows: int = 64, cols: int = 56) -> np.ndarray:
    """``(Z, rows, cols)`` uint16 with a different value in every voxel."""
    return np.random.default_rng(3).permutation(z * rows * cols).reshape(z, rows, cols).astype(np.uint16)


def expected_affine() -> np.ndarray:
    ras = np.eye(4)
    ras[:3, 0] = [-PIXEL_SPACING[1], 0, 0]  # column index: patient-left, i.e. -x in RAS
    ras[:3, 1] = [0, -PIXEL_SPACING[0], 0]  # row index: posterior, i.e. -y in RAS
    ras[:3, 2] = [0, 0, STEP]
    ras[:3, 3] = [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]]
    return ras


def test_axial_series_in_shuffled_files(tmp_path: Path):
    stack = phantom()
    uids = write_series(tmp_path, stack)
    volume, affine, info = read_series(tmp_path)
    assert volume.shape == (56, 64, 8) and volume.dtype == np.float32  # (X=cols, Y=rows, Z)
    assert np.array_equal(volume, np.transpose(stack, (2, 1, 0)).astype(np.float32))
    assert np.allclose(affine, expected_affine())
    assert info.series_instance_uid == uids["series"] and info.study_instance_uid == uids["study"]
    assert info.modality == "MR" and info.series_description == "AX T2 FLAIR"
    assert len(info.sop_instance_uids) == 8 and info.slice_step_mm == pytest.approx(STEP)
    assert [s for s in info.skipped if s.startswith("README.txt")]
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in info.files]
    assert positions == sorted(positions)
    canonical = to_canonical(volume, affine)  # an axial DICOM is already the slice-stack layout
    assert np.array_equal(canonical.array, stack.astype(np.float32))
    assert canonical.spacing_mm == pytest.approx((STEP, 0.8, 0.9))
    assert orientation_warning(affine) is None


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path):
    stack = phantom(z=2)
    write_series(tmp_path, stack)
    for path in tmp_path.glob("IM*"):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-10"
        ds.save_as(path, enforce_file_format=True)
    volume, _, _ = read_series(tmp_path)
    assert np.allclose(volume, np.transpose(stack, (2, 1, 0)) * 0.5 - 10)


def test_sagittal_series_reaches_the_same_canonical_layout(tmp_path: Path):
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns inferior; normal toward patient-right
    stack = phantom(z=6, rows=40, cols=32)  # (K slices, R rows, C cols)
    write_series(tmp_path, stack, iop=iop)
    volume, affine, _ = read_series(tmp_path)
    result = to_canonical(volume, affine)
    # canonical (Z=S, H=P, W=L): z is the reversed row, h the column, w the reversed slice
    expected = np.transpose(stack[::-1, ::-1, :], (1, 2, 0)).astype(np.float32)
    assert np.array_equal(result.array, expected)
    message = orientation_warning(affine)
    assert message is not None and "sagittal" in message and "90.0" in message


REFUSALS = {  # case -> what the one-line message must name
    "two series": "holds 2 series",
    "gap": "not evenly spaced",
    "duplicate": "duplicate slice positions",
    "no position": "missing ImagePositionPatient",
    "mixed orientation": "mixed orientations",
    "mixed spacing": "mixed pixel spacing",
    "no images": "no DICOM images",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_folders_are_refused_with_one_line(tmp_path: Path, case: str):
    stack = phantom(z=6, rows=16, cols=16)
    if case == "two series":
        write_series(tmp_path, stack)
        write_series(tmp_path / "other", stack[:3])
        for path in (tmp_path / "other").glob("IM*"):
            path.rename(tmp_path / f"B{path.name}")
    elif case == "gap":
        positions = [ORIGIN + k * STEP * np.array([0, 0, 1.0]) for k in (0, 1, 2, 4, 5, 6)]
        write_series(tmp_path, stack, positions=positions)
    elif case == "duplicate":
        positions = [ORIGIN + k * STEP * np.array([0, 0, 1.0]) for k in (0, 1, 2, 2, 3, 4)]
        write_series(tmp_path, stack, positions=positions)
    elif case == "no position":
        write_series(tmp_path, stack)
        path = sorted(tmp_path.glob("IM*"))[2]
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path, enforce_file_format=True)
    elif case in ("mixed orientation", "mixed spacing"):
        write_series(tmp_path, stack)
        path = sorted(tmp_path.glob("IM*"))[1]
        ds = pydicom.dcmread(path)
        if case == "mixed orientation":
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.9848", "-0.1736"]
        else:
            ds.PixelSpacing = ["1.0", "1.0"]
        ds.save_as(path, enforce_file_format=True)
    else:
        (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(LggsegError) as info:
        read_series(tmp_path)
    message = str(info.value)
    assert REFUSALS[case] in message and "\n" not in message


def test_undecodable_compressed_pixels_are_refused(tmp_path: Path):
    from pydicom.encaps import encapsulate

    write_series(tmp_path, phantom(z=3, rows=16, cols=16))
    path = min(tmp_path.glob("IM*"))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not really a codestream" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(LggsegError, match="cannot decode the pixel data") as info:
        read_series(tmp_path)
    assert "\n" not in str(info.value)


def decode_seg(path: Path, sop_uids: tuple[str, ...]) -> np.ndarray:
    """The SEG's segment 1 as ``(Z, rows, cols)`` over the given source instances (missing frames = 0)."""
    seg = hd.seg.segread(path)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(sop_uids), segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    return pixels[..., 0]


def test_write_seg_references_the_series_and_round_trips(tmp_path: Path):
    stack = phantom()
    write_series(tmp_path / "series", stack)
    volume, affine, info = read_series(tmp_path / "series")
    canonical = to_canonical(volume, affine)
    mask_canonical = np.zeros(canonical.array.shape, dtype=np.uint8)
    mask_canonical[2:5, 10:30, 5:20] = 1  # slices 2-4 hold "tumour"
    mask_canonical[3, 40:44, 50:54] = 1
    mask = from_canonical(mask_canonical, canonical)
    out = write_seg(mask, info, tmp_path / "seg.dcm", version="0.1.0")
    assert out == tmp_path / "seg.dcm" and not list(tmp_path.glob(".*tmp"))
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == info.series_instance_uid
    assert ds.StudyInstanceUID == info.study_instance_uid
    assert int(ds.NumberOfFrames) == 3  # only slices that contain the segment
    segment = ds.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentLabel == "FLAIR abnormality"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    decoded = decode_seg(out, info.sop_instance_uids)
    assert np.array_equal(decoded, mask_canonical)  # axial LPS series: frame k == canonical slice k


def test_write_seg_of_an_empty_mask_and_a_wrong_shape(tmp_path: Path):
    write_series(tmp_path / "series", phantom(z=4, rows=16, cols=16))
    volume, _, info = read_series(tmp_path / "series")
    out = write_seg(np.zeros(volume.shape, dtype=bool), info, tmp_path / "empty.dcm")
    assert int(pydicom.dcmread(out).NumberOfFrames) == 4
    assert not decode_seg(out, info.sop_instance_uids).any()
    with pytest.raises(LggsegError, match="series grid"):
        write_seg(np.zeros((16, 16, 3)), info, tmp_path / "bad.dcm")


def sample_patient() -> Path:
    """A patient folder of the kaggle_3m sample shipped inside the package (wherever it lives)."""
    package = Path(lggseg.errors.__file__).parent
    found = sorted(p for p in package.glob("**/sample/kaggle_3m/TCGA_*") if p.is_dir())
    assert found, f"no kaggle_3m sample under {package}"
    return found[0]


def test_real_slice_stack_round_trip(tmp_path: Path):
    tifffile = pytest.importorskip("tifffile")
    folder = sample_patient()
    number = {p: int(re.search(r"_(\d+)_mask\.tif$", p.name).group(1)) for p in folder.glob("*_mask.tif")}
    masks = {number[p]: tifffile.imread(p) > 0 for p in number}
    tumour = sorted(n for n, m in masks.items() if m.any())
    chosen = tumour[len(tumour) // 2 - 3 : len(tumour) // 2 + 3]  # 6 consecutive slices around the tumour middle
    assert len(chosen) == 6 and chosen == list(range(chosen[0], chosen[0] + 6))
    flair = np.stack([tifffile.imread(folder / f"{folder.name}_{n}.tif")[..., 1] for n in chosen])  # (6, 256, 256)
    truth = np.stack([masks[n] for n in chosen])
    write_series(tmp_path / "series", flair.astype(np.uint16), seed=1)
    volume, affine, info = read_series(tmp_path / "series")
    import nibabel as nib

    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    canonical = to_canonical(volume, affine)
    assert np.array_equal(canonical.array, flair.astype(np.float32))  # the model sees the TIFF stack
    out = write_seg(from_canonical(truth, canonical), info, tmp_path / "seg.dcm")
    assert np.array_equal(decode_seg(out, info.sop_instance_uids), truth)


def test_a_series_too_large_to_decode_is_refused_from_its_headers(tmp_path: Path):
    write_series(tmp_path, phantom(z=4, rows=16, cols=16))
    for path in tmp_path.glob("IM*"):  # headers claim 60000 x 60000 pixels; the pixel data is never read
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = 60000, 60000
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(LggsegError, match=r"series of 4 slices of 60000x60000: decoding it would need"):
        read_series(tmp_path)
