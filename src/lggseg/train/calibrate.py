"""Choosing post-processing on validation patients only.

After training, the best checkpoint predicts every validation patient once (no test-time
augmentation: the default model keeps single-network speed). A short list of rules
(:data:`RULES`, simplest first) is scored by mean per-patient Dice; the best wins, and a rule
within :data:`TIE` of the best loses to a simpler one listed before it. The winner is written into
``best.safetensors`` (so every predict path uses it) and into ``calibration.json``. Test
patients are never seen here.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import numpy as np

from lggseg.data.dataset import Volume
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import PostProcess, load_weights, save_weights
from lggseg.train.run_folder import RunFolder

RULES: tuple[PostProcess, ...] = (
    PostProcess(0.5),
    PostProcess(0.5, min_component=100),
    PostProcess(0.5, min_component=500),
    PostProcess(0.5, min_peak=0.9),
    PostProcess(0.5, min_component=100, min_peak=0.9),
    PostProcess(0.4),
    PostProcess(0.4, min_component=100),
    PostProcess(0.4, min_peak=0.9),
    PostProcess(0.4, min_component=100, min_peak=0.9),
)
"""The candidate rules, simplest first. None compares components with each other (no
keep-largest), so none can drop a tumor because a false-positive blob is bigger."""

TIE = 1e-3
"""Mean Dice differences below this are ties; ties go to the rule listed first."""


def score(probs: list[np.ndarray], truths: list[np.ndarray], post: PostProcess) -> float:
    """Mean per-patient Dice of one post-processing rule."""
    return statistics.fmean(metrics.dice(postprocess.apply(p, post), t) for p, t in zip(probs, truths))


def select_rule(scores: list[tuple[PostProcess, float]], tie: float = TIE) -> tuple[PostProcess, float]:
    """The best-scoring rule; a rule within ``tie`` of the best loses to one listed earlier.

    ``scores`` is ``(rule, mean Dice)`` in the order of simplicity (simplest first).
    """
    if not scores:
        raise ValueError("no rules to choose from")
    best = max(s for _, s in scores)
    return next((rule, s) for rule, s in scores if s >= best - tie)


def calibrate_run(run: RunFolder, val_volumes: list[Volume], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pick the post-processing for the run's best weights on the validation volumes.

    The chosen rule is written into a new ``best.safetensors`` (same tensors) and into
    ``calibration.json``; the loaded bundle itself is never changed.
    """
    bundle = load_weights(run.best)
    segmenter = Segmenter(bundle)
    truths = [v.require_masks() for v in val_volumes]
    probs = [segmenter.probabilities(v.images) for v in val_volumes]
    scores = [(rule, score(probs, truths, rule)) for rule in RULES]
    baseline = scores[0][1]
    chosen, chosen_score = select_rule(scores)
    log(
        f"calibration on {len(val_volumes)} validation patients: plain 0.5 threshold {baseline:.4f} -> "
        f"{chosen_score:.4f} with {chosen}"
    )
    info = dict(bundle.info, calibration={"val_mean_dice": chosen_score, "val_mean_dice_plain": baseline})
    save_weights(run.best, bundle.model, chosen, "none", info)
    report = {
        "validation_patients": [v.name for v in val_volumes],
        "chosen": {"tta": "none", **chosen.to_dict(), "val_mean_dice": chosen_score},
        "plain_threshold_0.5_val_mean_dice": baseline,
        "tie": TIE,
        "grid": [{"tta": "none", **rule.to_dict(), "val_mean_dice": s} for rule, s in scores],
    }
    run.write_calibration(report)
    return report
