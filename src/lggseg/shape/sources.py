"""Where the masks of the shape analysis come from: ground truth, a mask folder, or a model.

A *mask loader* maps a patient folder name to its ``(Z, H, W)`` bool mask (slice, row, column, as
in the data set), or None when the source has no mask for that patient.

* :func:`truth_source`: the data set's ``<patient>_<n>_mask.tif`` files.
* :func:`folder_source`: a folder of NIfTI volumes or per-slice PNG/TIFF masks.
* :func:`model_source`: a U-Net segments each patient's slices. With a cross-validation folder
  (:func:`cv_weights`) each patient is segmented by the model of its canonical fold, which never
  saw it: the *out-of-fold* masks that Buda et al. 2019 call "automatic". With one weights file
  (the shipped model by default) the masks of the patients it was trained on are not out-of-fold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from lggseg.data.dataset import SLICE_NAME, DatasetIndex, load_patient
from lggseg.data.splits import N_FOLDS, fold_of
from lggseg.errors import LggsegError
from lggseg.infer.provenance import seen_in_training
from lggseg.io.images import display_path, read_mask
from lggseg.io.nifti import from_nifti_axes, slice_stack_affine, to_nifti_axes

if TYPE_CHECKING:
    from lggseg.infer.segmenter import InferenceConfig, Segmenter

MaskLoader = Callable[[str], "np.ndarray | None"]
"""patient folder name -> ``(Z, H, W)`` bool mask, or None when the source has none for it."""

RunCheck = Callable[[Path], "str | None"]
"""A fold's run folder -> why its weights are not final (e.g. training not finished), or None."""

CV_WEIGHTS = "fold_{fold}/run/best.safetensors"
"""Where a cross-validation folder keeps fold ``k``'s model (the layout ``lggseg cv`` writes)."""

_DATE = re.compile(r"_\d{8}\Z")


def patient_id(folder_name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the ``data.csv`` key): drops a trailing date."""
    return _DATE.sub("", folder_name)


def _match(name: str, keys: Iterable[str]) -> str | None:
    """The key for a patient folder name: the same name, else the only key with the same patient ID."""
    keys = list(keys)
    if name in keys:
        return name
    same = [k for k in keys if patient_id(k) == patient_id(name)]
    return same[0] if len(same) == 1 else None


def truth_source(index: DatasetIndex) -> MaskLoader | None:
    """The ground-truth masks of every patient that has one per slice; None when no patient has any."""
    files = {p.name: [s.mask for s in p.slices] for p in index.patients if p.has_masks}
    if not files:
        return None

    def load(name: str) -> np.ndarray | None:
        paths = files.get(name)
        return None if paths is None else np.stack([read_mask(p) for p in paths if p is not None])

    return load


def _read_nifti_mask(path: Path) -> np.ndarray:
    """A NIfTI mask stored as lggseg writes it (``(W, H, Z)``, rows flipped) -> ``(Z, H, W)`` bool."""
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LggsegError(f"{display_path(path)}: cannot read NIfTI ({reason})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LggsegError(f"{display_path(path)}: a mask must be a 3D volume, got shape {data.shape}")
    return from_nifti_axes(data > 0)


def folder_source(mask_dir: str | Path) -> MaskLoader:
    """A loader over a folder of masks. Per patient, the folder holds one of:

    * a NIfTI volume ``<patient>.nii.gz``, ``<patient>_mask.nii.gz`` or
      ``<patient>/<patient>_mask.nii.gz`` (as ``lggseg predict`` and ``lggseg shape --save-masks``
      write them; axes ``(W, H, Z)`` with rows flipped, inverted here to ``(Z, H, W)``);
    * per-slice PNG/TIFF masks named like the data set, ``<patient>_<n>_mask.png``, also under
      ``<patient>/masks/``.

    NIfTI files win over slices; among NIfTIs, ``*_mask.nii.gz`` are used when there are any (so
    ``lggseg predict``'s ``*_flair.nii.gz`` are ignored); among slices, ``*_mask.*`` files win over
    unsuffixed ones. Files deeper than ``<patient>/masks/`` are not looked at. Patients are matched
    by folder name, else by patient ID.
    """
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise LggsegError(f"{display_path(mask_dir)}: no such mask folder")
    files = [
        p
        for p in mask_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".") and len(p.relative_to(mask_dir).parts) <= 3
    ]
    stems = {
        p: re.sub(r"\.nii(\.gz)?\Z", "", p.name, flags=re.IGNORECASE)
        for p in files
        if p.name.lower().endswith((".nii", ".nii.gz"))
    }
    if any(s.endswith("_mask") for s in stems.values()):
        stems = {p: s[: -len("_mask")] for p, s in stems.items() if s.endswith("_mask")}
    volumes = {s: p for p, s in stems.items()}
    suffixed: dict[str, dict[int, Path]] = {}
    plain: dict[str, dict[int, Path]] = {}
    for p in files:
        match = SLICE_NAME.match(p.name)
        if match:
            (suffixed if match["mask"] else plain).setdefault(match["prefix"], {})[int(match["number"])] = p
    slices = {**plain, **suffixed}
    if not volumes and not slices:
        raise LggsegError(f"{display_path(mask_dir)}: no NIfTI or <patient>_<n>_mask.png/.tif masks in this folder")

    def load(name: str) -> np.ndarray | None:
        key = _match(name, volumes)
        if key is not None:
            return _read_nifti_mask(volumes[key])
        key = _match(name, slices)
        if key is None:
            return None
        return np.stack([read_mask(slices[key][n]) for n in sorted(slices[key])])

    return load


def cv_weights(cv_dir: str | Path, names: Sequence[str], check_run: RunCheck | None = None) -> dict[str, Path]:
    """Each patient's out-of-fold model: ``{patient: CV/fold_<k>/run/best.safetensors}``, k its canonical fold.

    Raises :class:`LggsegError`, naming the folds, when a patient is outside the canonical split,
    when a needed fold has no weights file, or when ``check_run`` says a fold's run is not final.
    Never falls back to another fold's model or to the shipped one.
    """
    cv_dir = Path(cv_dir)
    if not cv_dir.is_dir():
        raise LggsegError(f"{display_path(cv_dir)}: no such cross-validation folder (--cv)")
    folds = {name: fold_of(name) for name in names}
    outside = sorted(name for name, k in folds.items() if k is None)
    if outside:
        raise LggsegError(
            f"{len(outside)} patient(s) are not in the canonical {N_FOLDS}-fold split (e.g. {outside[0]}), so no "
            "fold's model left them out; --cv gives out-of-fold masks only for the split's patients"
        )
    needed: dict[int, int] = {}
    for k in folds.values():
        if k is not None:
            needed[k] = needed.get(k, 0) + 1
    problems = []
    for k in sorted(needed):
        path = cv_dir / CV_WEIGHTS.format(fold=k)
        reason = None if path.is_file() else f"no {path.relative_to(cv_dir)}"
        if reason is None and check_run is not None:
            reason = check_run(path.parent)
        if reason is not None:
            problems.append(f"fold {k} ({needed[k]} patient(s)): {reason}")
    if problems:
        raise LggsegError(
            f"{display_path(cv_dir)}: no finished out-of-fold model for "
            + "; ".join(problems)
            + ". Finish the folds (lggseg cv) or leave out --cv to use one model (masks not out-of-fold)"
        )
    return {name: cv_dir / CV_WEIGHTS.format(fold=k) for name, k in folds.items()}


@dataclass(frozen=True)
class MaskOrigin:
    """Which model segmented a patient, and whether that model saw the patient in training.

    ``out_of_fold``: "yes" when the model never saw the patient, "no" when it was trained or
    validated on it, "unknown" when its weights do not say (:func:`lggseg.infer.provenance.seen_in_training`:
    the patients listed in the weights' ``trained_on``, else every patient outside their held-out
    ``fold``). ``model_fold`` is that held-out fold (-1 for a final model that held out no fold).
    """

    patient: str
    fold: int | None
    weights: str
    weights_sha256: str
    model_fold: int | None
    out_of_fold: str


def _model_fold(segmenter: Segmenter) -> int | None:
    fold = segmenter.bundle.info.get("fold")
    return fold if isinstance(fold, int) else None


def model_source(
    index: DatasetIndex,
    weights_of: Callable[[str], Path | None],
    inference: InferenceConfig | None = None,
    origins: list[MaskOrigin] | None = None,
    out_of_fold_only: bool = False,
) -> MaskLoader:
    """A loader that segments each patient with the model ``weights_of(patient)`` (None: the shipped one).

    Each weights file is loaded once. With ``out_of_fold_only`` (the ``--cv`` case) a model whose
    weights record another held-out fold (``info["fold"]``) than the patient's is refused.
    ``origins``, when given, receives one :class:`MaskOrigin` per segmented patient.
    """
    from lggseg.infer.segmenter import Segmenter

    by_name = index.by_name()
    loaded: dict[Path | None, Segmenter] = {}

    def load(name: str) -> np.ndarray | None:
        patient = by_name.get(name)
        if patient is None:
            return None
        weights = weights_of(name)
        if weights not in loaded:
            loaded[weights] = Segmenter.from_weights(weights, inference)
        segmenter = loaded[weights]
        fold, model_fold = fold_of(name), _model_fold(segmenter)
        if out_of_fold_only and model_fold is not None and model_fold != fold:
            raise LggsegError(
                f"{weights}: its model held out fold {model_fold}, not fold {fold}; it saw {name} in training"
            )
        mask = np.asarray(segmenter.segment(load_patient(patient).images), dtype=bool)
        if origins is not None:
            seen = seen_in_training(segmenter.bundle.info, name)
            origins.append(
                MaskOrigin(
                    name,
                    fold,
                    str(segmenter.bundle.path),
                    segmenter.bundle.sha256,
                    model_fold,
                    "unknown" if seen is None else "no" if seen else "yes",
                )
            )
        return mask

    return load


def saving_source(loader: MaskLoader, save_dir: Path, spacing: Sequence[float] | None = None) -> MaskLoader:
    """``loader``, and every mask it gives is also written as ``save_dir/<patient>_mask.nii.gz`` (:func:`save_mask`)."""

    def load(name: str) -> np.ndarray | None:
        mask = loader(name)
        if mask is not None:
            save_mask(mask, save_dir / f"{name}_mask.nii.gz", spacing)
        return mask

    return load


def save_mask(mask: np.ndarray, path: Path, spacing: Sequence[float] | None = None) -> None:
    """Write a ``(Z, H, W)`` bool mask atomically as a uint8 NIfTI that :func:`folder_source` reads back.

    ``spacing`` ``(z, y, x)`` mm goes into the affine (:func:`lggseg.io.nifti.slice_stack_affine`).
    """
    import nibabel as nib

    from lggseg.io.atomic import atomic_path

    image = nib.Nifti1Image(
        to_nifti_axes(np.asarray(mask, dtype=np.uint8)),
        slice_stack_affine(None if spacing is None else (float(spacing[0]), float(spacing[1]), float(spacing[2]))),
    )
    image.header["descrip"] = b"lggseg shape mask"
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
