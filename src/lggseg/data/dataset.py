"""Indexing and loading folders laid out like the Kaggle ``kaggle_3m`` LGG data set.

Layout: ``ROOT/<patient>/<patient>_<n>.tif`` with ``<patient>_<n>_mask.tif`` beside it.
``ROOT`` may also be the parent that holds ``kaggle_3m/``, or one patient folder. Slices are
paired by number and sorted numerically (1, 2, ..., 10). Hidden files and folders
(``.DS_Store``, macOS ``._*`` resource forks), ``__MACOSX`` folders, ``README*`` and
``*.csv``/``*.md``/``*.txt``/``*.tsv``/``*.json`` files are ignored; any other stray file
(``Thumbs.db``, ``desktop.ini``, a slice with another naming scheme) is reported as a problem and
skipped, and so is a folder without slice images.

Slices whose size is not 256x256 are resized to the model grid when loaded (image bilinear,
mask nearest); :func:`check_dataset` lists them so the user knows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lggseg.errors import LggsegError
from lggseg.io.images import display_path, read_image, read_mask

GRID = 256
"""Side of the square grid the model works on (the data set's native slice size)."""

SLICE_NAME = re.compile(r"^(?P<prefix>.+?)_(?P<number>\d+)(?P<mask>_mask)?\.(?:tif|tiff|png)\Z", re.IGNORECASE)
r"""``<patient>_<n>.tif`` / ``<patient>_<n>_mask.tif`` (also .tiff, .png; any case). ``\Z``, not ``$``:
a name ending in a newline is not a slice."""
_IGNORED_SUFFIXES = {".csv", ".md", ".txt", ".tsv", ".json"}


@dataclass(frozen=True)
class SliceFiles:
    """One slice of a patient: its number, image file and (optional) mask file."""

    number: int
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class PatientFiles:
    """All slice files of one patient folder, sorted by slice number."""

    name: str
    folder: Path
    slices: tuple[SliceFiles, ...]

    @property
    def institution(self) -> str:
        """Institution code from a TCGA name (``TCGA_CS_4941_...`` -> ``CS``), else ``?``."""
        parts = self.name.split("_")
        return parts[1] if len(parts) > 2 and parts[0] == "TCGA" else "?"

    @property
    def has_masks(self) -> bool:
        return all(s.mask is not None for s in self.slices)


@dataclass
class DatasetIndex:
    """The patients found under a data root, and the problems met while indexing."""

    root: Path
    patients: list[PatientFiles]
    problems: list[str] = field(default_factory=list)

    def by_name(self) -> dict[str, PatientFiles]:
        return {p.name: p for p in self.patients}


@dataclass
class Volume:
    """One patient's slices, on the model grid (:func:`load_volume`) or their own (:func:`load_patient`).

    images: ``(Z, H, W, 3)`` uint8, channels (pre-contrast, FLAIR, post-contrast).
    masks:  ``(Z, H, W)`` bool, or None when the patient has no masks.
    numbers: slice numbers, length Z.
    """

    name: str
    images: np.ndarray
    masks: np.ndarray | None
    numbers: list[int]

    def require_masks(self) -> np.ndarray:
        """The masks; raises :class:`LggsegError` for a patient without them."""
        if self.masks is None:
            raise LggsegError(f"{display_path(self.name)}: needs a mask for every slice")
        return self.masks


def _is_ignored(path: Path) -> bool:
    return (
        path.name.startswith(".") or path.name.upper().startswith("README") or path.suffix.lower() in _IGNORED_SUFFIXES
    )


def _is_ignored_folder(path: Path) -> bool:
    """Hidden folders and macOS archive debris (``__MACOSX``) are not patient folders."""
    return path.name.startswith(".") or path.name == "__MACOSX"


def resolve_root(root: str | Path) -> Path:
    """Return the folder holding the patient folders (accepts the parent of ``kaggle_3m``)."""
    root = Path(root)
    if not root.exists():
        raise LggsegError(f"{display_path(root)}: no such folder")
    if not root.is_dir():
        raise LggsegError(f"{display_path(root)}: not a folder")
    nested = root / "kaggle_3m"
    return nested if nested.is_dir() else root


def index_patient(folder: Path, problems: list[str]) -> PatientFiles | None:
    """Pair the slice files of one patient folder; record problems; None if it has no slices."""
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if _is_ignored(path) or path.is_dir():
            continue
        if not path.is_file():  # a FIFO, device or socket (or a link to one) is never opened
            problems.append(f"{display_path(path)}: not a regular file, skipped")
            continue
        match = SLICE_NAME.match(path.name)
        if not match:
            problems.append(
                f"{display_path(path)}: not a slice file name (<patient>_<n>.tif or <patient>_<n>_mask.tif), skipped"
            )
            continue
        number = int(match["number"])
        target = masks if match["mask"] else images
        if number in target:
            problems.append(f"{display_path(path)}: duplicate slice number {number}, skipped")
            continue
        target[number] = path
    for number in sorted(set(masks) - set(images)):
        problems.append(f"{display_path(masks[number])}: mask without an image, skipped")
    if not images:
        return None
    slices = tuple(SliceFiles(n, images[n], masks.get(n)) for n in sorted(images))
    with_mask = sum(s.mask is not None for s in slices)
    if 0 < with_mask < len(slices):
        missing = [s.image.name for s in slices if s.mask is None]
        problems.append(
            f"{display_path(folder)}: {len(missing)} image(s) without a mask, e.g. {display_path(missing[0])}"
        )
    numbers = [s.number for s in slices]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        problems.append(
            f"{display_path(folder)}: slice numbers are not contiguous ({numbers[0]}..{numbers[-1]}, {len(numbers)} "
            "slices)"
        )
    return PatientFiles(folder.name, folder, slices)


def index_dataset(root: str | Path) -> DatasetIndex:
    """Find every patient folder under ``root`` (or treat ``root`` as one patient folder)."""
    root = resolve_root(root)
    problems: list[str] = []
    patients: list[PatientFiles] = []
    has_slice_files = any(SLICE_NAME.match(p.name) for p in root.iterdir() if p.is_file() and not _is_ignored(p))
    folders = (
        [root] if has_slice_files else sorted(p for p in root.iterdir() if p.is_dir() and not _is_ignored_folder(p))
    )
    for folder in folders:
        patient = index_patient(folder, problems)
        if patient is None:
            problems.append(f"{display_path(folder)}: no slice images, skipped")
        else:
            patients.append(patient)
    if not patients:
        raise LggsegError(f"{display_path(root)}: no patient folders with slice images found")
    return DatasetIndex(root, patients, problems)


def slice_number(name: str) -> int | None:
    """The slice number of a slice file name (``P_13.tif`` or ``P_13_mask.tif`` -> 13), else None."""
    match = SLICE_NAME.match(name)
    return int(match["number"]) if match else None


CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
"""The model's input channels, in order (the Kaggle TIFFs' RGB)."""

FLAIR_ONLY_FILLS = ("repeat", "zeros")
FLAIR_ONLY_FILL = "repeat"
"""How :func:`flair_only_images` fills the pre- and post-contrast channels when only FLAIR is given.

``repeat``: FLAIR is copied into both channels (what grayscale slice images always got).
``zeros``: both channels are 0; per-volume normalisation maps a constant channel to 0 everywhere,
the mean of a normalised channel, so the network sees "no information" there.
For the first-round model ``repeat`` was the better of the two on the fold-0 test patients (mean
per-patient Dice 0.801 against 0.708; 3 channels: 0.883; ``scripts/flair_only_eval.py``,
MODEL_CARD.md "Input kinds"); recipe v3 trains with FLAIR-only samples filled this way. A model
trained for FLAIR-only input can name its own fill in its weights' ``info`` (key
``flair_only_fill``), which :func:`flair_only_fill` prefers."""


def flair_only_fill(info: dict[str, object] | None = None) -> str:
    """The fill a model asks for in its weights' ``info`` (``flair_only_fill``), else :data:`FLAIR_ONLY_FILL`."""
    value = (info or {}).get("flair_only_fill")
    return value if isinstance(value, str) and value in FLAIR_ONLY_FILLS else FLAIR_ONLY_FILL


def flair_only_images(flair: np.ndarray, fill: str = FLAIR_ONLY_FILL) -> np.ndarray:
    """Present FLAIR alone to the network: ``(...)`` uint8 FLAIR -> ``(..., 3)`` uint8 channels.

    The one place that decides what the pre- and post-contrast channels become when only FLAIR is
    known (see :data:`FLAIR_ONLY_FILL`); FLAIR stays in channel 1, as in the training data.
    """
    if fill not in FLAIR_ONLY_FILLS:
        raise LggsegError(f"unknown FLAIR-only fill {fill!r}; choose one of {', '.join(FLAIR_ONLY_FILLS)}")
    flair = np.asarray(flair, dtype=np.uint8)
    if fill == "repeat":
        return np.repeat(flair[..., None], 3, axis=-1)
    out = np.zeros((*flair.shape, 3), np.uint8)
    out[..., 1] = flair
    return out


def flair_only_description(fill: str = FLAIR_ONLY_FILL) -> str:
    """One line saying what the channels are for a FLAIR-only input."""
    rest = "FLAIR repeated" if fill == "repeat" else "zero (the mean, once normalised)"
    return f"FLAIR only (pre- and post-contrast channels: {rest})"


def compose_channels(
    pre: np.ndarray | None, flair: np.ndarray, post: np.ndarray | None, fill: str = FLAIR_ONLY_FILL
) -> tuple[np.ndarray, str]:
    """Stack ``(...)`` uint8 channels into ``(..., 3)`` (pre, FLAIR, post) and describe them in one line.

    A missing pre- or post-contrast channel is filled as :func:`flair_only_images` fills it.
    """
    filled = flair_only_images(flair, fill)
    if pre is None and post is None:
        return filled, flair_only_description(fill)
    if pre is not None:
        filled[..., 0] = pre
    if post is not None:
        filled[..., 2] = post
    if pre is not None and post is not None:
        return filled, "pre-contrast, FLAIR, post-contrast"
    given = ", ".join(n for n, c in zip(CHANNELS, (pre, flair, post)) if c is not None)
    return filled, f"{given} (missing channel: {'FLAIR repeated' if fill == 'repeat' else 'zero'})"


def fit_to_grid(image: np.ndarray, mask: np.ndarray | None, size: int = GRID) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an ``(H, W, 3)`` image (bilinear) and ``(H, W)`` mask (nearest) to ``size`` x ``size``."""
    if image.shape[:2] == (size, size):
        return image, mask
    from PIL import Image

    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if mask is not None:
        nearest = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        mask = np.asarray(nearest) > 0
    return resized, mask


def load_volume(patient: PatientFiles, with_masks: bool = True) -> Volume:
    """Read every slice of a patient onto the model grid. Raises LggsegError on a bad file."""
    images = np.empty((len(patient.slices), GRID, GRID, 3), np.uint8)
    use_masks = with_masks and patient.has_masks
    masks = np.zeros((len(patient.slices), GRID, GRID), bool) if use_masks else None
    for i, item in enumerate(patient.slices):
        image = read_image(item.image)
        mask = read_mask(item.mask) if use_masks and item.mask is not None else None
        if mask is not None and item.mask is not None and mask.shape != image.shape[:2]:
            raise LggsegError(_size_mismatch(item.mask, mask, image))
        image, mask = fit_to_grid(image, mask)
        images[i] = image
        if masks is not None and mask is not None:
            masks[i] = mask
    return Volume(patient.name, images, masks, [s.number for s in patient.slices])


def load_patient(patient: PatientFiles) -> Volume:
    """A patient's slices at their own size when they all share one, else on the model grid.

    This is how every front end reads a patient folder (``predict``, ``demo``, a zip sent to
    ``serve``). A mask whose size differs from its image raises :class:`LggsegError`.
    """
    images = [read_image(item.image) for item in patient.slices]
    if len({image.shape for image in images}) != 1:
        return load_volume(patient)
    truth = None
    if patient.has_masks:
        masks = []
        for item, image in zip(patient.slices, images):
            assert item.mask is not None
            mask = read_mask(item.mask)
            if mask.shape != image.shape[:2]:
                raise LggsegError(_size_mismatch(item.mask, mask, image))
            masks.append(mask)
        truth = np.stack(masks)
    return Volume(patient.name, np.stack(images), truth, [s.number for s in patient.slices])


def _size_mismatch(path: Path, mask: np.ndarray, image: np.ndarray) -> str:
    mask_size, image_size = f"{mask.shape[1]}x{mask.shape[0]}", f"{image.shape[1]}x{image.shape[0]}"
    return f"{display_path(path)}: mask is {mask_size} but its image is {image_size}"


@dataclass
class CheckReport:
    """What ``lggseg data check`` prints: counts plus every problem found."""

    root: Path
    n_patients: int
    n_slices: int
    n_tumor_slices: int
    n_empty_slices: int
    institutions: dict[str, int]
    problems: list[str]
    resized: int


def check_dataset(root: str | Path, progress: bool = False) -> CheckReport:
    """Validate every file under ``root``; never raises for a bad file, only records it."""
    index = index_dataset(root)
    problems = list(index.problems)
    n_slices = n_tumor = n_empty = resized = 0
    items = [(p, s) for p in index.patients for s in p.slices]
    iterator: Iterable[tuple[PatientFiles, SliceFiles]] = items
    if progress:
        from lggseg.io.progress import track

        iterator = track(items, description="checking")
    for _, item in iterator:
        try:
            image = read_image(item.image)
        except LggsegError as exc:
            problems.append(str(exc))
            continue
        if image.shape[:2] != (GRID, GRID):
            resized += 1
        n_slices += 1
        if item.mask is None:
            continue
        try:
            mask = read_mask(item.mask)
        except LggsegError as exc:
            problems.append(str(exc))
            continue
        if mask.shape != image.shape[:2]:
            problems.append(_size_mismatch(item.mask, mask, image))
            continue
        if mask.any():
            n_tumor += 1
        else:
            n_empty += 1
    if resized:
        problems.append(f"{resized} slice(s) are not {GRID}x{GRID}; they will be resized to the model grid")
    institutions = dict(sorted(Counter(p.institution for p in index.patients).items()))
    return CheckReport(index.root, len(index.patients), n_slices, n_tumor, n_empty, institutions, problems, resized)
