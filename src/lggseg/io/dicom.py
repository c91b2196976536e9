"""Read one DICOM image series into a volume with a RAS+ affine; write the mask back as DICOM SEG.

Conventions
-----------
* :func:`read_series` returns the voxels as ``(X, Y, Z)`` = ``(column, row, slice)``, nibabel's
  convention, with a 4x4 affine from voxel index to RAS+ world mm; it goes straight into
  :func:`lggseg.io.orientation.to_canonical`, and ``nibabel.Nifti1Image(volume, affine)`` is a
  correct NIfTI of the series.
* Slices are ordered by their position along the slice normal (``row cosines x column cosines``
  of ImageOrientationPatient), i.e. ``Z`` runs along that normal whatever the file names or
  InstanceNumbers say.
* DICOM patient coordinates are LPS; the affine is RAS+ (x and y negated).

pydicom and highdicom are imported inside the functions (optional extra ``dicom``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lggseg.errors import LggsegError
from lggseg.io.budget import check_decoded_bytes

if TYPE_CHECKING:
    from pydicom import Dataset

_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_IOP_TOL = 1e-4  # direction cosines equal within this
_SPACING_TOL = 1e-3  # mm, PixelSpacing equal within this
_STEP_TOL = 0.05  # relative deviation of a slice step from the mean step


@dataclass(frozen=True)
class SeriesInfo:
    """What identifies a series and is needed to write a SEG that references it.

    ``files`` and ``sop_instance_uids`` are in volume order: entry ``k`` is slice ``Z = k``.
    Datasets are not kept (memory); :func:`write_seg` re-reads the headers from ``files``.
    """

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    series_description: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[Path, ...]
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns), as in DICOM PixelSpacing
    slice_step_mm: float
    skipped: tuple[str, ...] = ()  # "name: reason" for files in the folder that were not used


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _floats(ds: Dataset, keyword: str, count: int, name: str) -> np.ndarray:
    value: Any = getattr(ds, keyword, None)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (count,) or not np.all(np.isfinite(arr)):
        raise LggsegError(f"{name}: missing or invalid {keyword} ({value!r})")
    return arr


def _scan(folder: Path) -> tuple[list[tuple[Path, Dataset]], list[str]]:
    """Headers (no pixel data) of the image files in ``folder``; the rest is listed as skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not folder.is_dir():
        raise LggsegError(f"{folder}: not a folder")
    headers: list[tuple[Path, Dataset]] = []
    skipped: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
            skipped.append(f"{path.name}: not DICOM ({_one_line(exc)})")
            continue
        if str(getattr(ds, "Modality", "")).upper() in _NON_IMAGE_MODALITIES or "Rows" not in ds:
            skipped.append(f"{path.name}: not an image ({getattr(ds, 'Modality', '?')})")
            continue
        headers.append((path, ds))
    return headers, skipped


def _check_consistent(folder: Path, headers: list[tuple[Path, Dataset]]) -> None:
    """Refuse several series, multi-frame files, and mixed geometry, each with a one-line message."""
    series = Counter(str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers)
    if len(series) > 1:
        listing = ", ".join(f"{uid or '(none)'}: {n} files" for uid, n in series.most_common())
        raise LggsegError(f"{folder}: holds {len(series)} series ({listing}); put one series per folder")
    for path, ds in headers:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise LggsegError(f"{path.name}: multi-frame (enhanced) DICOM is not supported; convert it with dcm2niix")
        if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
            raise LggsegError(f"{path.name}: colour images are not supported (SamplesPerPixel {ds.SamplesPerPixel})")
        if "ImagePositionPatient" not in ds:
            raise LggsegError(f"{path.name}: missing ImagePositionPatient; cannot place the slice in space")
    first_path, first = headers[0]
    iop0 = _floats(first, "ImageOrientationPatient", 6, first_path.name)
    ps0 = _floats(first, "PixelSpacing", 2, first_path.name)
    size0 = (int(first.Rows), int(first.Columns))
    for path, ds in headers[1:]:
        if np.abs(_floats(ds, "ImageOrientationPatient", 6, path.name) - iop0).max() > _IOP_TOL:
            raise LggsegError(f"{folder}: mixed orientations (ImageOrientationPatient differs in {path.name})")
        if np.abs(_floats(ds, "PixelSpacing", 2, path.name) - ps0).max() > _SPACING_TOL:
            raise LggsegError(f"{folder}: mixed pixel spacing (PixelSpacing differs in {path.name})")
        if (int(ds.Rows), int(ds.Columns)) != size0:
            raise LggsegError(
                f"{folder}: mixed image sizes ({path.name} is {ds.Rows}x{ds.Columns}, not {size0[0]}x{size0[1]})"
            )


def _geometry(headers: list[tuple[Path, Dataset]]) -> tuple[list[int], np.ndarray, float]:
    """Slice order along the normal, the LPS affine, and the slice step in mm."""
    iop = _floats(headers[0][1], "ImageOrientationPatient", 6, headers[0][0].name)
    row_cos, col_cos = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
    normal = np.cross(row_cos, col_cos)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3) or abs(row_cos @ col_cos) > 1e-3:
        raise LggsegError(f"{headers[0][0].name}: ImageOrientationPatient is not two orthogonal unit vectors")
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3, p.name) for p, ds in headers])
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    ordered = positions[order]
    dist = along[order]
    dup = np.nonzero(np.diff(dist) < 1e-3)[0]
    if dup.size:
        a, b = headers[order[dup[0]]][0].name, headers[order[dup[0] + 1]][0].name
        raise LggsegError(f"duplicate slice positions: {a} and {b} are both at {dist[dup[0]]:.3f} mm along the normal")
    ps = _floats(headers[0][1], "PixelSpacing", 2, headers[0][0].name)  # (row spacing, column spacing)
    if len(order) > 1:
        diffs = np.diff(ordered, axis=0)
        typical = np.median(diffs, axis=0)
        error = np.linalg.norm(diffs - typical, axis=1)
        worst = int(np.argmax(error))
        if error[worst] > _STEP_TOL * np.linalg.norm(typical):
            raise LggsegError(
                f"slice positions are not evenly spaced: {np.linalg.norm(diffs[worst]):.2f} mm between sorted "
                f"slices {worst + 1} and {worst + 2} where the step is {np.linalg.norm(typical):.2f} mm "
                "(missing slices, or two acquisitions in one series?)"
            )
        step_vec = (ordered[-1] - ordered[0]) / (len(order) - 1)  # a uniform gantry tilt stays as a shear
        step = float(np.linalg.norm(step_vec))
    else:
        ds = headers[0][1]
        step = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)
        step_vec = normal * step
    lps = np.eye(4)
    lps[:3, 0] = row_cos * ps[1]  # X = column index: along a row, spaced by the column spacing
    lps[:3, 1] = col_cos * ps[0]  # Y = row index: down a column, spaced by the row spacing
    lps[:3, 2] = step_vec
    lps[:3, 3] = ordered[0]
    return order, lps, step


def _pixels(path: Path) -> np.ndarray:
    """One slice as float32 ``(rows, columns)`` in rescaled units (RescaleSlope/Intercept applied)."""
    import pydicom

    ds = pydicom.dcmread(path)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing or failing decoder plugins raise many types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise LggsegError(
            f"{path.name}: cannot decode the pixel data ({name}): {_one_line(exc)}; "
            "install the matching decoder (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg) or decompress "
            "the series (gdcmconv --raw, dcmdjpeg)"
        ) from None
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray, SeriesInfo]:
    """Read the single image series in ``folder``.

    Not recursive. Files that are not DICOM (no ``DICM`` preamble) or not images (SEG, RTSTRUCT, SR,
    ...) are skipped and listed in ``info.skipped``.

    Returns:
        ``volume``: float32 ``(X=columns, Y=rows, Z=slices)``, RescaleSlope/Intercept applied, slices
        sorted along the slice normal; ``affine``: 4x4 voxel ``(x, y, z)`` -> RAS+ mm;
        ``info``: :class:`SeriesInfo` with the files and SOPInstanceUIDs in the same slice order.

    Raises:
        LggsegError (one line) for: no images, several SeriesInstanceUIDs, multi-frame or colour
        images, mixed ImageOrientationPatient / PixelSpacing / image size, a missing
        ImagePositionPatient, duplicate or unevenly spaced slice positions, undecodable pixel data.
    """
    folder = Path(folder)
    headers, skipped = _scan(folder)
    if not headers:
        raise LggsegError(f"{folder}: no DICOM images found ({len(skipped)} other files)")
    _check_consistent(folder, headers)
    order, lps, step = _geometry(headers)
    first = headers[0][1]
    rows, cols = int(first.Rows), int(first.Columns)
    check_decoded_bytes(rows * cols * len(order) * 4, f"{folder}: series of {len(order)} slices of {cols}x{rows}")
    volume = np.empty((cols, rows, len(order)), dtype=np.float32)
    for z, i in enumerate(order):
        volume[:, :, z] = _pixels(headers[i][0]).T
    ps = _floats(first, "PixelSpacing", 2, headers[0][0].name)
    info = SeriesInfo(
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(getattr(first, "StudyInstanceUID", "")),
        frame_of_reference_uid=str(getattr(first, "FrameOfReferenceUID", "")),
        modality=str(getattr(first, "Modality", "")),
        series_description=str(getattr(first, "SeriesDescription", "")),
        sop_class_uid=str(getattr(first, "SOPClassUID", "")),
        sop_instance_uids=tuple(str(headers[i][1].SOPInstanceUID) for i in order),
        files=tuple(headers[i][0] for i in order),
        rows=rows,
        columns=cols,
        pixel_spacing_mm=(float(ps[0]), float(ps[1])),
        slice_step_mm=step,
        skipped=tuple(skipped),
    )
    return volume, _LPS_TO_RAS @ lps, info


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lggseg")
    except PackageNotFoundError:
        return "unknown"


def write_seg(
    mask_in_series_grid: np.ndarray,
    series: SeriesInfo,
    out: str | Path,
    *,
    label: str = "FLAIR abnormality",
    algorithm: str = "lggseg U-Net",
    version: str | None = None,
    series_number: int = 9901,
) -> Path:
    """Write a binary DICOM SEG of ``mask_in_series_grid`` that references ``series``.

    Args:
        mask_in_series_grid: ``(X=columns, Y=rows, Z=slices)`` as returned by :func:`read_series`
            (e.g. ``from_canonical(mask, to_canonical(volume, affine))``); nonzero = segment.
        series: the :class:`SeriesInfo` of the source series (its files are re-read, headers only).
        out: path of the ``.dcm`` to write; written to a temporary file, then renamed.
        label, algorithm, version: segment label and AlgorithmIdentification (version defaults to
            the installed lggseg version).

    Frames are stored only for source slices that contain segment pixels; when the mask is empty
    everywhere every slice gets an (empty) frame, so the SEG still states "no finding" per slice.
    Segment: category SCT 49755003 *Morphologically abnormal structure*, type SCT 108369006
    *Neoplasm*, anatomic region SCT 12738006 *Brain*, algorithm type AUTOMATIC.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    mask = np.asarray(mask_in_series_grid)
    expected = (series.columns, series.rows, len(series.files))
    if mask.shape != expected:
        raise LggsegError(f"the mask has shape {mask.shape}; the series grid is (X, Y, Z) = {expected}")
    frames = np.ascontiguousarray(np.transpose(mask != 0, (2, 1, 0)))  # (Z, rows, columns), frame k <-> files[k]
    sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    if [str(ds.SOPInstanceUID) for ds in sources] != list(series.sop_instance_uids):
        raise LggsegError("the series files changed since they were read (SOPInstanceUIDs differ)")
    version = version or _package_version()
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=codes.DCM.ArtificialIntelligence
        ),
        anatomic_regions=[codes.SCT.Brain],
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="lggseg",
            manufacturer_model_name=algorithm,
            software_versions=version,
            device_serial_number="0",
            series_description=f"{label} ({algorithm})"[:64],
            omit_empty_frames=bool(frames.any()),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise LggsegError(f"cannot build the DICOM SEG: {_one_line(exc)}") from None
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
