"""Distillation targets: the mean probability of teacher networks over the training slices.

A recipe with ``distill_teachers`` trains its network on a mix of the annotation and the teachers'
mean probability (``distill_weight`` of the target comes from the teachers). Teachers are weights
files; ``{fold}`` in a path is replaced by the run's fold, so each fold of a cross-validation learns
from the teachers of the same fold. A teacher must record its training patients, and none of them
may be one of the run's test patients: a teacher that saw them would leak the test set into the
student (the same rule as ``init_weights``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from lggseg.data.dataset import Volume
from lggseg.data.splits import patient_key
from lggseg.errors import LggsegError
from lggseg.infer.provenance import patients_seen
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io.progress import track
from lggseg.model.bundle import ModelBundle, load_weights
from lggseg.train.slices import SOFT_SCALE


def fold_path(template: str, fold: int) -> Path:
    """A weights path of ``fold``: ``{fold}`` in ``template`` filled in (teachers and ``init_weights``)."""
    return Path(template.replace("{fold}", str(fold)))


def teacher_paths(templates: Sequence[str], fold: int) -> list[Path]:
    """The teachers' weights files of ``fold``: each template with ``{fold}`` filled in."""
    return [fold_path(t, fold) for t in templates]


def refuse_leak(bundle: ModelBundle, source: str, test_patients: Sequence[str]) -> list[str]:
    """The patients that shaped ``bundle``; raises when they are unknown or include a test patient."""
    seen = patients_seen(bundle.info)
    if seen is None:
        raise LggsegError(f"{source}: the weights do not record their training patients")
    seen_keys = {patient_key(p) for p in seen}
    leaked = [p for p in test_patients if patient_key(p) in seen_keys]
    if leaked:
        raise LggsegError(f"{source}: trained on {len(leaked)} of this fold's test patients ({leaked[0]}...)")
    return [str(p) for p in seen]


def teacher_targets(
    paths: Sequence[Path],
    volumes: Sequence[Volume],
    test_patients: Sequence[str],
    threads: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """The teachers' mean probability on every slice of ``volumes``, in bank order.

    Returns ``(N, 256, 256)`` uint8 (``p * SOFT_SCALE``; N = the volumes' slices, concatenated) and,
    per teacher, its path and SHA-256 (for the run's ``split.json``).
    """
    if not paths:
        raise ValueError("no teachers")
    bundles = []
    for path in paths:
        if not path.is_file():
            raise LggsegError(f"distill teacher {path}: no such weights file")
        bundle = load_weights(path)
        refuse_leak(bundle, f"distill teacher {path}", test_patients)
        bundles.append(bundle)
    teachers = Segmenter.of_members(bundles[0], bundles, InferenceConfig(threads=threads))  # mean of the teachers
    soft = np.empty((sum(len(v.images) for v in volumes), *volumes[0].images.shape[1:3]), np.uint8)
    start = 0
    for volume in track(list(volumes), description=f"{len(paths)} teacher(s)"):
        soft[start : start + len(volume.images)] = np.rint(teachers.probabilities(volume.images) * SOFT_SCALE)
        start += len(volume.images)
    for path, bundle in zip(paths, bundles):
        log(f"distill teacher {path} (SHA-256 {bundle.sha256[:12]}...) predicted {start} training slices")
    return torch.from_numpy(soft), [{"weights": str(p), "sha256": b.sha256} for p, b in zip(paths, bundles)]


def mix_targets(targets: torch.Tensor, weight: float) -> torch.Tensor:
    """``(B, 2, H, W)`` annotation (channel 0, {0, 1}) and teacher probability (channel 1) ->
    ``(B, 1, H, W)`` training target ``(1 - weight) * annotation + weight * teacher``."""
    return (1 - weight) * targets[:, :1] + weight * targets[:, 1:2]
