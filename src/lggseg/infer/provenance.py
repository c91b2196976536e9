"""Did these weights see this patient? So that no Dice of a training patient passes as a test result.

Weights written by ``lggseg train`` list the patients that shaped them (training and validation)
in their ``info["trained_on"]``. Older weights record only their canonical ``fold``: they were
trained on the other folds' patients. An ensemble (:mod:`lggseg.infer.ensemble`) saw a patient
when any member did.
"""

from __future__ import annotations

from typing import Any

from lggseg.data.splits import canonical_folds, fold_of, patient_key


def seen_in_training(info: dict[str, Any], patient: str) -> bool | None:
    """True when the weights with this ``info`` were trained or validated on ``patient``.

    False when they provably were not; None when the weights do not say (then a Dice is no
    test result either).
    """
    if "ensemble" in info:
        answers = [seen_in_training(member.get("info", {}), patient) for member in info["ensemble"]]
        if any(a is True for a in answers):
            return True
        return False if answers and all(a is False for a in answers) else None
    key = patient_key(patient)
    if "trained_on" in info:
        return any(patient_key(p) == key for p in info["trained_on"])
    fold = info.get("fold")
    if isinstance(fold, int):
        home = fold_of(patient)
        return None if home is None else home != fold
    return None


def patients_seen(info: dict[str, Any]) -> list[str] | None:
    """The patients that shaped single-network weights: their ``trained_on`` list, or for older weights
    that record only their canonical ``fold``, every canonical patient of the other folds (a superset
    of what they saw). None when the weights say neither."""
    if isinstance(info.get("trained_on"), list):
        return [str(p) for p in info["trained_on"]]
    fold = info.get("fold")
    folds = canonical_folds()
    if isinstance(fold, int) and 0 <= fold < len(folds):
        return sorted(p for k, names in enumerate(folds) if k != fold for p in names)
    return None


def provenance_note(info: dict[str, Any], patient: str) -> str:
    """A short label to print beside a patient's Dice."""
    seen = seen_in_training(info, patient)
    if seen is True:
        return "TRAINING patient of this model: optimistic, not a test result"
    if seen is False:
        return "held out: this model never saw the patient"
    return "unknown whether this model saw the patient"
