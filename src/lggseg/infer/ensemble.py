"""Several models as one: the mean of their probabilities, then one post-processing rule.

A cross-validation folder (``CV/fold_<k>/run/best.safetensors``, as ``lggseg cv`` writes it) or a
folder of ``*.safetensors`` files can be given wherever ``--weights`` is accepted; the
:class:`~lggseg.infer.segmenter.Segmenter` then runs every member on each batch and averages the
probabilities. Each member was calibrated on its own validation patients; the ensemble uses the
rule most members chose (ties go to the rule with fewer cleanup steps, then the lower threshold).
An ensemble of ``n`` networks costs ``n`` times the network time of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lggseg.errors import LggsegError
from lggseg.infer.backends import Backend
from lggseg.model.bundle import BEST_NAME, ModelBundle, PostProcess, load_weights


def cv_fold_weights(folder: str | Path) -> list[Path]:
    """A cross-validation folder's trained fold models, ``fold_<k>/run/best.safetensors``, in fold order."""
    return sorted(Path(folder).glob(f"fold_*/run/{BEST_NAME}"), key=lambda p: p.parent.parent.name)


def ensemble_members(folder: str | Path) -> list[Path]:
    """The weights files of an ensemble folder, or ``[]`` when ``folder`` is not one.

    A CV folder gives ``fold_<k>/run/best.safetensors`` in fold order; any other folder gives its
    ``*.safetensors`` files (except a lone run folder's ``best.safetensors``, which is one model).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    folds = cv_fold_weights(folder)
    if folds:
        return folds
    if (folder / BEST_NAME).exists():
        return []
    files = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("."))
    return files if len(files) > 1 else []


def consensus_post(posts: Sequence[PostProcess]) -> PostProcess:
    """The rule most members chose; ties go to fewer cleanup steps, then the lower threshold."""
    if not posts:
        raise ValueError("no members")
    counts = Counter(posts)
    return min(
        counts,
        key=lambda p: (
            -counts[p],
            p.n_rules,
            p.threshold,
            p.min_component,
            p.min_peak,
            p.min_slice_area,
            p.min_extent,
            p.min_end_core,
            p.fill_holes,
        ),
    )


class EnsembleBackend:
    """Runs every member backend on the batch: ``(B, C, H, W)`` -> mean ``(B, 1, H, W)`` probabilities."""

    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ValueError("an ensemble needs at least one member")
        self.backends = list(backends)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total = self.backends[0](batch).astype(np.float32)
        for backend in self.backends[1:]:
            total += backend(batch)
        return total / len(self.backends)


def load_members(files: Sequence[Path]) -> tuple[ModelBundle, list[ModelBundle]]:
    """Load the members and build the ensemble's own bundle (first member's network, consensus rule).

    The ensemble bundle's ``sha256`` hashes the members' hashes in order, so a report names the exact set.
    """
    members = [load_weights(f) for f in files]
    inputs = {(m.config.in_channels, m.config.context_slices) for m in members}
    if len(inputs) > 1:
        kinds = ", ".join(f"{c} channels with {k} context slice(s)" for c, k in sorted(inputs))
        raise LggsegError(f"{files[0].parent}: ensemble members take different inputs ({kinds})")
    digest = hashlib.sha256("".join(m.sha256 for m in members).encode()).hexdigest()
    info = {
        "ensemble": [
            {"weights": str(f), "sha256": m.sha256, "postprocess": m.post.to_dict(), "info": m.info}
            for f, m in zip(files, members)
        ]
    }
    bundle = dataclasses.replace(
        members[0],
        post=consensus_post([m.post for m in members]),
        tta="none",
        info=info,
        sha256=digest,
        path=Path(files[0]).parent,
    )
    return bundle, members
