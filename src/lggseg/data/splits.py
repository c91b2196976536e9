"""The canonical 5-fold patient-level split shipped with the package.

``splits_5fold.json`` lists all 110 patient folders of the LGG data set in 5 folds, stratified by
institution. For fold ``k`` the test patients are fold ``k``; the training patients are the
other four folds, and validation patients are drawn from those training patients only.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

from lggseg.errors import LggsegError

N_FOLDS = 5


@lru_cache(maxsize=1)
def canonical_folds() -> tuple[tuple[str, ...], ...]:
    """The 5 folds of patient folder names, as committed in the package."""
    text = resources.files("lggseg.data").joinpath("splits_5fold.json").read_text()
    return tuple(tuple(fold) for fold in json.loads(text)["folds"])


def patient_key(name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the patient ID without the scan date)."""
    parts = name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 and parts[0] == "TCGA" else name


def fold_of(name: str) -> int | None:
    """The canonical fold holding this patient, or None for patients outside the LGG set."""
    key = patient_key(name)
    for k, fold in enumerate(canonical_folds()):
        if any(patient_key(p) == key for p in fold):
            return k
    return None


@dataclass(frozen=True)
class FoldSplit:
    """Patients present in a data folder, split for one fold.

    ``skipped`` counts patients of the canonical split that are absent from the folder.
    ``unknown`` lists patients in the folder that are not in the canonical split (never used).
    """

    fold: int
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    skipped: int
    unknown: tuple[str, ...]


NO_TEST_FOLD = -1
"""``fold`` value for a final model: every patient of the canonical split is a training (or validation)
patient and none is held out for testing; its honest estimate is the cross-validation of its recipe."""


def split_for_fold(
    available: list[str], fold: int, n_validation: int, seed: int = 0, holdout: Sequence[str] = ()
) -> FoldSplit:
    """Split the available patient names for ``fold`` (:data:`NO_TEST_FOLD`: hold out no test fold).

    Validation patients are ``n_validation`` of the training patients, picked with ``seed``,
    spread across institutions (round-robin over institutions after a seeded shuffle).
    ``holdout`` patients (matched by patient ID) are test patients whatever their fold: a final
    model keeps the bundled demo patients out this way, so that the demo's Dice is a held-out one.
    """
    folds = canonical_folds()
    if not (0 <= fold < len(folds) or fold == NO_TEST_FOLD):
        raise LggsegError(
            f"--fold must be between 0 and {len(folds) - 1} (or {NO_TEST_FOLD}: no test fold), got {fold}"
        )
    by_key = {patient_key(name): name for name in available}
    known = {patient_key(p) for f in folds for p in f}
    held = {patient_key(p) for p in holdout}
    fold_test = {patient_key(p) for p in folds[fold]} if fold >= 0 else set()
    test = tuple(sorted(name for key, name in by_key.items() if key in fold_test | held))
    pool = sorted(
        by_key[patient_key(p)]
        for k, f in enumerate(folds)
        if k != fold
        for p in f
        if patient_key(p) in by_key and patient_key(p) not in held
    )
    skipped = sum(1 for f in folds for p in f if patient_key(p) not in by_key)
    unknown = tuple(sorted(name for key, name in by_key.items() if key not in known))
    if n_validation and n_validation >= len(pool):
        raise LggsegError(
            f"fold {fold}: {len(pool)} training patients are too few for {n_validation} validation patients"
        )
    rng = random.Random(seed)
    by_institution: dict[str, list[str]] = {}
    for name in pool:
        by_institution.setdefault(name.split("_")[1] if name.count("_") >= 2 else "?", []).append(name)
    queues = []
    for inst in sorted(by_institution):
        names = by_institution[inst][:]
        rng.shuffle(names)
        queues.append(names)
    queues.sort(key=len, reverse=True)
    validation: list[str] = []
    while len(validation) < n_validation:
        for queue in queues:
            if queue and len(validation) < n_validation:
                validation.append(queue.pop())
    train = tuple(sorted(set(pool) - set(validation)))
    return FoldSplit(fold, train, tuple(sorted(validation)), test, skipped, unknown)
