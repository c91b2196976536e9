"""Would averaging two recipes' fold models help? Out of fold, each recipe alone and their mean.

Given two or more CV folders trained on the same canonical split (``CV/fold_K/run/best.safetensors``
and ``split.json``; the recipes may take different inputs, e.g. three or five slices of context),
every fold present in all of them is scored three ways or more: each recipe's fold model alone, and
the mean of their probabilities. For each way the post-processing is chosen anew on the fold's
validation patients (:func:`lggseg.train.calibrate.select_rule` over
:data:`~lggseg.train.calibrate.RULES`, as training does) and then applied to the fold's test
patients, who choose nothing. The report pools the test patients of the folds (docs/protocol.md:
per-patient 3D Dice) and pairs the ensemble with the first folder.

The ensemble costs the sum of its members' network times, so it is a teacher or a ceiling, not a
default (the default keeps 10x the reference speed at batch 1).

Usage (about 2 minutes a fold for two recipes on 2 idle CPU cores)::

    python scripts/cv_ensemble_eval.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --cv docs/cv_v4 --out ens.json

``--score train`` scores the fold's training patients instead of its test patients (the rule still
chosen on validation): how closely the models fit the patients they trained on, which is what a
distillation teacher shows its student (``docs/cv_v6/README.md``). Those numbers are in-sample,
never an estimate of accuracy. ``--folds`` limits the run to some folds. ``--against CV`` pairs the
ensemble with a further CV folder's published test Dice (``CV/fold_K/test/per_patient.csv``) without
making it a member: a width-8 pair against the shipped width-12 network, for instance.
``--marginal CV`` (one of the ``--cv`` folders) also scores the mean of the other members, with its
own rule chosen on validation, and pairs the full mean against it: what that member adds
(``docs/cv_v7/README.md``). The members' probabilities are computed once for both means.
``--reuse REPORT`` takes the folds an earlier report of the same members already scored from it
instead of predicting them again (a fold that finished later is then the only one predicted).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from lggseg.data.dataset import PatientFiles, index_dataset, load_volume
from lggseg.errors import LggsegError, run_script
from lggseg.evaluation import metrics
from lggseg.evaluation.cohort import PairedSummary, headline, paired_summary
from lggseg.infer import postprocess
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.io import atomic
from lggseg.model.bundle import load_weights
from lggseg.train.calibrate import RULES, score, select_rule

ROLES = ("validation", "test")
WITHOUT = "ensemble_without_marginal"
"""The way name of the mean without the ``--marginal`` member."""


def read_split(folder: Path, fold: str) -> dict[str, Any]:
    """The split a CV folder's fold model trained on (``fold_K/run/split.json``)."""
    return json.loads((folder / fold / "run" / "split.json").read_text())


def common_folds(folders: list[Path]) -> list[str]:
    """Fold names (``fold_K``) with a trained model in every folder and the same split in all."""
    names = [{p.parent.parent.name for p in f.glob("fold_*/run/best.safetensors")} for f in folders]
    folds = sorted(set.intersection(*names))
    for fold in folds:
        splits = [read_split(f, fold) for f in folders]
        if any({r: s[r] for r in ROLES} != {r: splits[0][r] for r in ROLES} for s in splits[1:]):
            raise LggsegError(f"{fold}: the folders' splits differ; an ensemble of them would not be out of fold")
    return folds


def score_way(
    probs: dict[str, list[np.ndarray]], truths: dict[str, list[np.ndarray]], names: list[str], scored: str = "test"
) -> dict[str, Any]:
    """Choose the rule on validation, apply it to the ``scored`` patients: their per-patient metrics."""
    chosen = select_rule([score(probs["validation"], truths["validation"], rule) for rule in RULES])
    results = {
        name: metrics.patient_metrics(postprocess.apply(prob, chosen.rule), truth)
        for name, prob, truth in zip(names, probs[scored], truths[scored])
    }
    return {"rule": chosen.rule.to_dict(), "val_mean_dice": chosen.mean_dice, scored: results}


def mean_probabilities(
    members: list[dict[str, list[np.ndarray]]], roles: tuple[str, ...]
) -> dict[str, list[np.ndarray]]:
    """Per role, each patient's mean over ``members`` of their ``(Z, H, W)`` probabilities."""
    return {role: [np.mean(ps, axis=0) for ps in zip(*(m[role] for m in members))] for role in roles}


def fold_results(
    named: dict[str, PatientFiles],
    folders: list[Path],
    fold: str,
    threads: int,
    scored: str = "test",
    marginal: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Per way (each folder's name, then ``ensemble``, then with ``marginal`` the mean without that
    folder, :data:`WITHOUT`): chosen rule and the scored patients' metrics."""
    split = read_split(folders[0], fold)
    roles = ("validation", scored)
    volumes = {role: [load_volume(named[name]) for name in split[role]] for role in roles}
    truths = {role: [v.require_masks() for v in vols] for role, vols in volumes.items()}
    per_member = []
    for folder in folders:
        bundle = load_weights(folder / fold / "run" / "best.safetensors")
        segmenter = Segmenter(bundle, config=InferenceConfig(threads=threads))
        per_member.append({role: [segmenter.probabilities(v.images) for v in vols] for role, vols in volumes.items()})
    ways = {str(folder): probs for folder, probs in zip(folders, per_member)}
    ways["ensemble"] = mean_probabilities(per_member, roles)
    if marginal is not None:
        others = [m for folder, m in zip(folders, per_member) if folder != marginal]
        ways[WITHOUT] = mean_probabilities(others, roles)
    return {way: score_way(probs, truths, split[scored], scored) for way, probs in ways.items()}


def published_dice(folder: Path, folds: list[str]) -> dict[str, float]:
    """Per-patient test Dice of ``folds`` as ``folder`` published them (``fold_K/test/per_patient.csv``)."""
    dice: dict[str, float] = {}
    for fold in folds:
        table = folder / fold / "test" / "per_patient.csv"
        if not table.is_file():
            raise LggsegError(f"{table} is missing: --against needs the same folds' test reports")
        dice |= {row["patient"]: float(row["dice"]) for row in csv.DictReader(table.open())}
    return dice


def reused_folds(report_path: Path, args: argparse.Namespace, folds: list[str]) -> dict[str, Any]:
    """The folds of ``folds`` that an earlier report of the same members, scoring and ``--marginal``
    already holds (``--reuse``)."""
    try:
        earlier = json.loads(report_path.read_text())
    except (OSError, ValueError) as err:
        raise LggsegError(f"--reuse {report_path}: not a readable report ({err})") from err
    same = earlier.get("cv") == [str(f) for f in args.cv] and earlier.get("scored") == args.score
    has_marginal = "paired_full_minus_marginal" in earlier
    if not same or has_marginal != (args.marginal is not None):
        raise LggsegError(f"--reuse {report_path}: that report scored other members or another way")
    if args.marginal is not None and earlier["paired_full_minus_marginal"]["without"] != str(args.marginal):
        raise LggsegError(f"--reuse {report_path}: that report left out another member")
    return {fold: earlier["folds"][fold] for fold in folds if fold in earlier.get("folds", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, action="append", required=True, help="CV folder (give two or more)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--score", choices=["test", "train"], default="test", help="patients to score (train: in-sample diagnostics)"
    )
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every common fold)")
    parser.add_argument("--against", type=Path, help="CV folder whose published test Dice the ensemble is paired with")
    parser.add_argument("--marginal", type=Path, help="one --cv folder: also score the mean without it, and pair")
    parser.add_argument("--reuse", type=Path, help="an earlier report of the same members: its folds are not redone")
    args = parser.parse_args(argv)
    if len(args.cv) < 2:
        raise LggsegError("give at least two --cv folders")
    if args.marginal is not None and (args.marginal not in args.cv or len(args.cv) < 3):
        raise LggsegError("--marginal must be one of three or more --cv folders")
    folds = common_folds(args.cv)
    if args.folds is not None:
        folds = [f for f in folds if int(f.removeprefix("fold_")) in args.folds]
    if not folds:
        raise LggsegError("no fold has a trained model in every --cv folder")
    theirs: dict[str, float] = {}
    if args.against is not None:  # checked before any inference: the pairing needs the same test patients
        if args.score != "test":
            raise LggsegError("--against pairs test patients; it cannot be used with --score train")
        theirs = published_dice(args.against, folds)
        if set(theirs) != {name for fold in folds for name in read_split(args.cv[0], fold)["test"]}:
            raise LggsegError(f"{args.against} tested other patients in these folds")
    named = index_dataset(args.data).by_name()
    results = reused_folds(args.reuse, args, folds) if args.reuse is not None else {}
    for fold in folds:
        if fold in results:
            continue
        results[fold] = fold_results(named, args.cv, fold, args.threads, args.score, args.marginal)
        print(f"{fold}: " + ", ".join(f"{way} {r['rule']}" for way, r in results[fold].items()), flush=True)
    ways = list(results[folds[0]])
    pooled = {w: {n: m for r in results.values() for n, m in r[w][args.score].items()} for w in ways}
    report: dict[str, Any] = {
        "cv": [str(f) for f in args.cv],
        "scored": args.score,
        "folds": results,
        "summary": {w: metrics.summarize(list(pooled[w].values())) for w in ways},
    }

    def ensemble_minus(dice: dict[str, float]) -> PairedSummary:
        return paired_summary([pooled["ensemble"][n]["dice"] - dice[n] for n in pooled["ensemble"]])

    def way_dice(way: str) -> dict[str, float]:
        return {n: m["dice"] for n, m in pooled[way].items()}

    paired = ensemble_minus(way_dice(ways[0]))
    report["paired_ensemble_minus_first"] = paired.to_dict()
    marginal = None
    if args.marginal is not None:
        marginal = ensemble_minus(way_dice(WITHOUT))
        report["paired_full_minus_marginal"] = {"without": str(args.marginal), **marginal.to_dict()}
    against = None
    if args.against is not None:
        against = ensemble_minus(theirs)
        report["paired_ensemble_minus_against"] = {"against": str(args.against), **against.to_dict()}
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    for way in ways:
        print(f"{way}: {headline(report['summary'][way])}")
    print(f"ensemble - {ways[0]}: {paired.describe()}")
    if marginal is not None:
        print(f"ensemble - ensemble without {args.marginal}: {marginal.describe()}")
    if against is not None:
        print(f"ensemble - {args.against}: {against.describe()}")
    return 0


if __name__ == "__main__":
    run_script(main)
