"""Choosing post-processing and test-time augmentation on validation patients only.

After training, the best checkpoint predicts every validation patient with and without flip TTA.
A grid of thresholds and 3D component rules is scored by mean per-patient Dice; the winner is
written into ``best.safetensors`` (so every predict path uses it) and into ``calibration.json``.
Test patients are never seen here.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Callable

import numpy as np

from lggseg import atomic, metrics, postprocess
from lggseg.dataset import Volume
from lggseg.postprocess import PostProcess

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_COMPONENTS = (0, 25, 50, 100, 250, 500, 1000, 2000)


def candidates() -> list[PostProcess]:
    grid = [PostProcess(t, m, False) for t, m in itertools.product(THRESHOLDS, MIN_COMPONENTS)]
    return grid + [PostProcess(t, 0, True) for t in THRESHOLDS]


def score(probs: list[np.ndarray], truths: list[np.ndarray], post: PostProcess) -> float:
    """Mean per-patient Dice of one post-processing rule."""
    return statistics.fmean(metrics.dice(postprocess.apply(p, post), t) for p, t in zip(probs, truths))


def calibrate_run(run: Path, val_volumes: list[Volume], log: Callable[[str], None] = print) -> dict:
    """Pick TTA + post-processing for ``run/best.safetensors`` on the validation volumes."""
    from lggseg.inference import Segmenter, TorchBackend
    from lggseg.weights import load_weights, save_weights

    bundle = load_weights(run / "best.safetensors")
    backend = TorchBackend(bundle)
    truths = [v.masks for v in val_volumes]
    results = []
    for tta in ("none", "flip"):
        bundle.tta = tta
        segmenter = Segmenter(bundle, backend)
        probs = [segmenter.probabilities(v.images) for v in val_volumes]
        for post in candidates():
            results.append((score(probs, truths, post), tta, post))
    baseline = next(s for s, tta, post in results if tta == "none" and post == PostProcess())
    # highest Dice wins; ties go to the simpler rule (no TTA, fewer changes) by list order
    best_score, best_tta, best_post = max(results, key=lambda r: r[0])
    log(f"calibration on {len(val_volumes)} validation patients: plain 0.5 threshold {baseline:.4f} -> {best_score:.4f} with TTA={best_tta}, {best_post}")
    info = dict(bundle.info, calibration={"val_mean_dice": best_score, "val_mean_dice_plain": baseline})
    save_weights(run / "best.safetensors", bundle.model, best_post, best_tta, info)
    report = {
        "validation_patients": [v.name for v in val_volumes],
        "chosen": {"tta": best_tta, **best_post.to_dict(), "val_mean_dice": best_score},
        "plain_threshold_0.5_val_mean_dice": baseline,
        "grid": [{"tta": tta, **post.to_dict(), "val_mean_dice": s} for s, tta, post in results],
    }
    atomic.write_text(run / "calibration.json", json.dumps(report, indent=1))
    return report
