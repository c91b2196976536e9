"""Where a prediction's errors come from: each wrong voxel of a patient attributed to one cause.

A patient's 3D Dice is ``2 TP / (2 TP + FP + FN)``. The budget splits FP and FN by cause, so the
Dice the patient would score with one cause removed (and nothing else changed) follows, and
summed over a cohort it says which cause holds how much of the gap to a target:

* false positives in a 3D component of the final mask that touches no tumor voxel, split by the
  component's peak probability: ``fp_separate_confident`` (peak >= ``confident``: the network was
  sure; no probability rule separates it from a tumor) and ``fp_separate_unsure``;
* false positives in a component that also covers tumor, which no component rule can remove:
  ``fp_extra_slice`` on slices without tumor (the tumor drawn a slice or more too long) and
  ``fp_outline`` on tumor slices (the outline drawn too wide);
* ``fn_missed_slice``: the tumor of slices on which the mask has nothing;
* the other false negatives, on slices the mask does cover, by the probability the network gave
  them: ``fn_unseen`` (below ``unseen``: the network saw no tumor there, so neither a threshold
  nor post-processing reaches it), ``fn_below_threshold`` (between ``unseen`` and the threshold),
  and ``fn_removed`` (above the threshold: post-processing removed them).

Components are 26-connected, as in :mod:`lggseg.infer.postprocess`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["CAUSES", "FALSE_NEGATIVE_CAUSES", "FALSE_POSITIVE_CAUSES", "dice_without", "error_budget", "summarize"]

FALSE_POSITIVE_CAUSES = ("fp_separate_confident", "fp_separate_unsure", "fp_extra_slice", "fp_outline")
FALSE_NEGATIVE_CAUSES = ("fn_missed_slice", "fn_unseen", "fn_below_threshold", "fn_removed")
CAUSES = FALSE_POSITIVE_CAUSES + FALSE_NEGATIVE_CAUSES

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def error_budget(
    prob: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray,
    threshold: float,
    confident: float = 0.95,
    unseen: float = 0.1,
) -> dict[str, int]:
    """Voxel counts of one patient: ``tp``, ``fp``, ``fn`` and each of :data:`CAUSES`.

    prob: ``(Z, H, W)`` float in [0, 1], the network's probabilities; mask: ``(Z, H, W)`` bool, the
    final mask made from them (threshold and post-processing); truth: ``(Z, H, W)`` bool. The
    causes of each kind add up to ``fp`` and ``fn``.
    """
    if not (prob.shape == mask.shape == truth.shape):
        raise ValueError(f"shapes differ: prob {prob.shape}, mask {mask.shape}, truth {truth.shape}")
    mask, truth = mask.astype(bool), truth.astype(bool)
    false_pos, false_neg = mask & ~truth, truth & ~mask
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    touches = np.zeros(n + 1, bool)
    touches[np.unique(labels[mask & truth])] = True
    peaks = np.asarray(ndimage.maximum(prob, labels, index=np.arange(n + 1))) if n else np.zeros(1)
    separate_confident = ~touches & (peaks >= confident)
    separate_unsure = ~touches & (peaks < confident)
    for table in (separate_confident, separate_unsure):
        table[0] = False
    tumor_slice = np.broadcast_to(np.any(truth, axis=(1, 2)).reshape(-1, 1, 1), truth.shape)
    drawn_slice = np.broadcast_to(np.any(mask, axis=(1, 2)).reshape(-1, 1, 1), mask.shape)
    attached = touches[labels] & false_pos
    fn_prob = prob[false_neg & drawn_slice]
    return {
        "tp": int((mask & truth).sum()),
        "fp": int(false_pos.sum()),
        "fn": int(false_neg.sum()),
        "fp_separate_confident": int(separate_confident[labels[false_pos]].sum()),
        "fp_separate_unsure": int(separate_unsure[labels[false_pos]].sum()),
        "fp_extra_slice": int((attached & ~tumor_slice).sum()),
        "fp_outline": int((attached & tumor_slice).sum()),
        "fn_missed_slice": int((false_neg & ~drawn_slice).sum()),
        "fn_unseen": int((fn_prob < unseen).sum()),
        "fn_below_threshold": int(((fn_prob >= unseen) & (fn_prob <= threshold)).sum()),
        "fn_removed": int((fn_prob > threshold).sum()),
    }


def dice_without(budget: dict[str, int], cause: str | None = None) -> float:
    """The patient's Dice from its budget, with the voxels of ``cause`` made right (``None``: as it is).

    A false positive made right becomes a true negative; a false negative, a true positive. An empty
    prediction of an empty truth scores 1, as :func:`lggseg.evaluation.metrics.dice` does.
    """
    tp, fp, fn = budget["tp"], budget["fp"], budget["fn"]
    if cause in FALSE_POSITIVE_CAUSES:
        fp -= budget[cause]
    elif cause in FALSE_NEGATIVE_CAUSES:
        tp, fn = tp + budget[cause], fn - budget[cause]
    elif cause is not None:
        raise ValueError(f"unknown cause {cause!r}; one of {', '.join(CAUSES)}")
    total = 2 * tp + fp + fn
    return 1.0 if total == 0 else 2 * tp / total


def summarize(budgets: list[dict[str, int]]) -> dict[str, Any]:
    """Cohort view of per-patient budgets: the mean Dice, and for each cause its voxels, the mean
    Dice with it removed, the gain, and how many patients it costs more than 0.05 Dice."""
    if not budgets:
        raise ValueError("no patients")
    as_is = np.array([dice_without(b) for b in budgets])
    causes: dict[str, Any] = {}
    for cause in CAUSES:
        fixed = np.array([dice_without(b, cause) for b in budgets])
        causes[cause] = {
            "voxels": int(sum(b[cause] for b in budgets)),
            "mean_dice_without": float(fixed.mean()),
            "mean_dice_gain": float(fixed.mean() - as_is.mean()),
            "patients_losing_over_0.05": int((fixed - as_is > 0.05).sum()),
        }
    return {"n_patients": len(budgets), "mean_dice": float(as_is.mean()), "causes": causes}
