"""Out of fold with a second threshold offered: each fold's rule chosen on validation, then tested.

For every fold of a CV folder (``fold_K/run/best.safetensors`` and ``split.json``), the rule list
:data:`lggseg.train.calibrate.RULES` is offered twice: as it is (threshold 0.5) and with every rule
at ``--threshold``. The fold's 10 validation patients choose among them by the product's own
selection (:func:`lggseg.train.calibrate.select_rule`: best mean Dice, ties to fewer false-positive
slices, then to the rule listed first, so the 0.5 list wins ties). The network, with the chosen
rule written into a copy of its weights, is then evaluated on the fold's test patients by
``lggseg evaluate`` (:func:`lggseg.evaluation.evaluate.evaluate`). Test patients choose nothing.

Writes ``OUT/fold_K/run/`` (the weights copy with its rule, ``split.json``, ``calibration.json``) and
``OUT/fold_K/test/`` (the evaluate report), which ``scripts/cv_compare.py OUT docs/cv`` compares.

Usage (about 3 minutes for 5 folds on 2 idle CPU cores)::

    python scripts/threshold_list_eval.py --data ../shared/data/lgg/kaggle_3m --cv docs/cv --threshold 0.4 --out V3_T04
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.errors import LggsegError, run_script
from lggseg.evaluation.evaluate import evaluate
from lggseg.infer.ensemble import cv_fold_weights
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import load_weights, save_weights
from lggseg.train.calibrate import RULES, calibration_report, score_rules, select_rule
from lggseg.train.run_folder import RunFolder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="CV folder: fold_K/run/{best.safetensors,split.json}")
    parser.add_argument("--threshold", type=float, required=True, help="the second threshold offered")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0.0 < args.threshold < 1.0:
        raise LggsegError(f"--threshold {args.threshold}: must lie in (0, 1)")
    weights = cv_fold_weights(args.cv)
    if not weights:
        raise LggsegError(f"{args.cv}: no fold_K/run/best.safetensors")
    candidates = list(RULES) + [dataclasses.replace(rule, threshold=args.threshold) for rule in RULES]
    named = index_dataset(args.data).by_name()
    for path in weights:
        fold = int(path.parent.parent.name.removeprefix("fold_"))
        split = json.loads((path.parent / "split.json").read_text())
        bundle = load_weights(path)
        volumes = [load_volume(named[name]) for name in split["validation"]]
        scores = score_rules(Segmenter(bundle), volumes, candidates)
        chosen, plain = select_rule(scores), select_rule(scores[: len(RULES)])
        print(
            f"fold {fold}: validation {chosen.mean_dice:.4f}, {chosen.false_positive_slices} false-positive slices, "
            f"threshold {chosen.rule.threshold}; the 0.5 list alone {plain.mean_dice:.4f}, "
            f"{plain.false_positive_slices} ({'the' if plain.rule == bundle.post else 'not the'} fold's own rule)",
            flush=True,
        )
        run = RunFolder(args.out / f"fold_{fold}" / "run")
        run.path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path.parent / RunFolder.SPLIT, run / RunFolder.SPLIT)
        run.write_calibration(calibration_report(volumes, scores, chosen))
        save_weights(run.best, bundle.model, chosen.rule, bundle.tta, bundle.info)
        evaluate(args.data, run.path.parent / "test", weights=run.best, fold=fold, log=lambda _: None)
    return 0


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
