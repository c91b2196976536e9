"""Several models as one: the mean of their probabilities, then one post-processing rule.

Wherever ``--weights`` is accepted, a folder can stand for an ensemble:

* an **ensemble folder** holds ``ensemble.json`` (:data:`MANIFEST`): its member files with their
  SHA-256 (checked on every load), the validation patients that chose its rule, and the rule chosen
  on them for the mean of the members (``lggseg calibrate FOLDER --data DATA``,
  :func:`lggseg.train.calibrate.calibrate_ensemble`). The packaged accurate mode (``--accurate``,
  :func:`accurate_path`) is one;
* a **cross-validation folder** (``CV/fold_<k>/run/best.safetensors``, as ``lggseg cv`` writes it)
  or a folder of ``*.safetensors`` files: each member was calibrated on its own validation
  patients, and the ensemble uses the rule most members chose (ties go to the rule with fewer
  cleanup steps, then the lower threshold).

Members may take different inputs (3 channels, or 2.5D with 1 or 2 slices of context; FLAIR
alone): :class:`~lggseg.infer.segmenter.Segmenter` builds each member's own input and averages
their ``(Z, H, W)`` probabilities. An ensemble of ``n`` networks costs the sum of their network
times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from lggseg.errors import LggsegError
from lggseg.io import atomic
from lggseg.model.bundle import BEST_NAME, ModelBundle, PostProcess, load_weights

MANIFEST = "ensemble.json"
FORMAT = "lggseg-ensemble-1"
ACCURATE_NAME = "accurate"


def accurate_path() -> Path:
    """The packaged accurate ensemble (``--accurate``): a folder with :data:`MANIFEST`."""
    return Path(str(resources.files("lggseg.model").joinpath("weights").joinpath(ACCURATE_NAME)))


def cv_fold_weights(folder: str | Path) -> list[Path]:
    """A cross-validation folder's trained fold models, ``fold_<k>/run/best.safetensors``, in fold order."""
    return sorted(Path(folder).glob(f"fold_*/run/{BEST_NAME}"), key=lambda p: p.parent.parent.name)


def ensemble_members(folder: str | Path) -> list[Path]:
    """The weights files of an ensemble folder, or ``[]`` when ``folder`` is not one.

    A folder with :data:`MANIFEST` gives the files it lists; a CV folder gives
    ``fold_<k>/run/best.safetensors`` in fold order; any other folder gives its ``*.safetensors``
    files (except a lone run folder's ``best.safetensors``, which is one model).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if (folder / MANIFEST).exists():
        return [folder / member["file"] for member in read_manifest(folder)["members"]]
    folds = cv_fold_weights(folder)
    if folds:
        return folds
    if (folder / BEST_NAME).exists():
        return []
    files = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("."))
    return files if len(files) > 1 else []


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """``folder/ensemble.json``, checked: ``members`` (``file``, ``sha256``), ``validation``, and
    ``postprocess`` (absent until the folder is calibrated)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LggsegError(f"{path}: not a readable ensemble manifest ({str(exc).splitlines()[0]})") from None
    bad = f"{path}: not an lggseg ensemble manifest"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LggsegError(f"{bad} (format must be {FORMAT!r})")
    members = manifest.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise LggsegError(f"{bad}: it must list at least two members")
    for member in members:
        name = member.get("file") if isinstance(member, dict) else None
        if not isinstance(name, str) or Path(name).name != name or not isinstance(member.get("sha256"), str):
            raise LggsegError(f"{bad}: each member needs a plain file name in this folder and its sha256")
    if not isinstance(manifest.get("validation"), list):
        raise LggsegError(f"{bad}: it must list its validation patients")
    return manifest


def write_manifest(
    folder: str | Path, files: Sequence[Path], validation: Sequence[str], description: str = ""
) -> dict[str, Any]:
    """Start an ensemble folder: ``ensemble.json`` for member ``files`` (already in ``folder``) and
    the ``validation`` patients that will choose its rule. Written atomically; not yet calibrated."""
    folder = Path(folder)
    members = []
    for file in files:
        file = Path(file)
        if file.parent.resolve() != folder.resolve():
            raise LggsegError(f"{file}: an ensemble member must sit in the ensemble folder {folder}")
        members.append({"file": file.name, "sha256": load_weights(file).sha256})  # a valid lggseg weights file
    manifest = {"format": FORMAT, "description": description, "members": members, "validation": list(validation)}
    _save_manifest(folder, manifest)
    return read_manifest(folder)


def set_manifest_rule(folder: str | Path, post: PostProcess, calibration: dict[str, Any]) -> None:
    """Record the rule chosen for the ensemble (and how) in its manifest, atomically."""
    manifest = read_manifest(folder)
    manifest["postprocess"] = post.to_dict()
    manifest["calibration"] = calibration
    _save_manifest(folder, manifest)


def _save_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    atomic.write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def consensus_post(posts: Sequence[PostProcess]) -> PostProcess:
    """The rule most members chose; ties go to fewer cleanup steps, then the lower threshold."""
    if not posts:
        raise ValueError("no members")
    counts = Counter(posts)
    fields = [f.name for f in dataclasses.fields(PostProcess) if f.name != "threshold"]
    return min(counts, key=lambda p: (-counts[p], p.n_rules, p.threshold, *(getattr(p, f) for f in fields)))


def load_model(weights: str | Path | None) -> tuple[ModelBundle, list[ModelBundle]]:
    """``weights`` as :func:`~lggseg.model.bundle.load_weights` takes it, or an ensemble folder:
    the bundle to use and the ensemble's members (``[]`` for one network)."""
    if weights is not None and ensemble_members(weights):
        return load_ensemble(weights)
    return load_weights(weights), []


def load_ensemble(folder: str | Path) -> tuple[ModelBundle, list[ModelBundle]]:
    """Load an ensemble folder (see the module docstring): its own bundle and its members.

    The ensemble bundle carries the rule (the manifest's, else the members' consensus), the
    members' provenance in ``info["ensemble"]`` and a ``sha256`` of the members' hashes in order,
    so a report names the exact set; its ``model`` and ``config`` are the first member's.
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if (folder / MANIFEST).exists() else None
    files = [folder / m["file"] for m in manifest["members"]] if manifest else ensemble_members(folder)
    if not files:
        raise LggsegError(f"{folder}: not an ensemble folder")
    if manifest is None:
        members = [load_weights(f) for f in files]
        post = consensus_post([m.post for m in members])
    else:
        members = [load_weights(f, expected_sha256=m["sha256"]) for f, m in zip(files, manifest["members"])]
        raw = manifest.get("postprocess")
        try:
            post = PostProcess(**raw) if isinstance(raw, dict) else consensus_post([m.post for m in members])
        except (TypeError, ValueError) as exc:
            raise LggsegError(f"{folder / MANIFEST}: bad postprocess ({exc})") from None
    digest = hashlib.sha256("".join(m.sha256 for m in members).encode()).hexdigest()
    info: dict[str, Any] = {
        "ensemble": [
            {"weights": str(f), "sha256": m.sha256, "postprocess": m.post.to_dict(), "info": m.info}
            for f, m in zip(files, members)
        ]
    }
    if manifest is not None:
        info["manifest"] = {k: manifest[k] for k in ("description", "validation", "calibration") if k in manifest}
    bundle = dataclasses.replace(members[0], post=post, tta="none", info=info, sha256=digest, path=folder)
    return bundle, members
