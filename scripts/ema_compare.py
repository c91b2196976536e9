"""The trained network against its weight average, from one run: a paired check without seed noise.

A run trained with ``ema_decay > 0`` keeps, in its last ``checkpoint.safetensors``, both the network
as the optimizer left it (``model.*``) and its exponential moving average (``ema.*``): the same
data order, augmentation and initialisation, so their difference is the average's alone. For each of
the two, this script writes a run folder (``OUT/trained/run``, ``OUT/average/run``: the weights,
the run's ``split.json`` and ``config.yaml``), chooses its post-processing on the run's own
validation patients (:func:`lggseg.train.calibrate.recalibrate`, the rule list of every run), and
evaluates it on the fold's test patients (:func:`lggseg.evaluation.evaluate.evaluate`). Test patients
choose nothing. It prints both summaries and the paired per-patient difference.

    python scripts/ema_compare.py RUN --data ../shared/data/lgg/kaggle_3m --out OUT
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lggseg.errors import LggsegError, run_script
from lggseg.evaluation.cohort import paired_summary
from lggseg.evaluation.evaluate import evaluate
from lggseg.model.bundle import save_weights
from lggseg.model.unet import UNet
from lggseg.train.calibrate import recalibrate
from lggseg.train.run_folder import RunFolder

VARIANTS = {"trained": "model.", "average": "ema."}


def export(run: RunFolder, prefix: str, dest: Path) -> Path:
    """Write the checkpoint's ``prefix`` tensors as a run folder ``dest`` with the run's split and config."""
    state = run.checkpoint_tensors(prefix)
    if not state:
        raise LggsegError(f"{run.checkpoint} holds no {prefix}* tensors (was the run trained with ema_decay?)")
    model = UNet(run.config().model)
    model.load_state_dict(state)
    split = json.loads((run / RunFolder.SPLIT).read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in (RunFolder.SPLIT, "config.yaml"):
        shutil.copy(run / name, dest / name)
    info = {"fold": split["fold"], "epoch": run.state()["epoch"], "weights": prefix.rstrip(".")}
    info["trained_on"] = sorted(set(split["train"] + split["validation"]))
    save_weights(dest / "best.safetensors", model, info=info)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="finished run folder trained with ema_decay > 0")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run = RunFolder(args.run)
    if not run.checkpoint.exists():
        print(f"error: {args.run}: no checkpoint.safetensors", file=sys.stderr)
        return 2
    fold = json.loads((run / RunFolder.SPLIT).read_text())["fold"]
    dice: dict[str, dict[str, float]] = {}
    summary = {}
    for variant, prefix in VARIANTS.items():
        folder = export(run, prefix, args.out / variant / "run")
        chosen = recalibrate(folder, args.data, log=lambda message: None)["chosen"]
        report = evaluate(args.data, args.out / variant / "test", weights=folder, fold=fold, log=lambda m: None)
        dice[variant] = {row["patient"]: row["dice"] for row in report["per_patient"]}
        summary[variant] = {key: report[key] for key in ("n_patients", "mean_dice", "median_dice", "min_dice")}
        summary[variant]["rule"] = {
            k: chosen[k] for k in ("threshold", "min_component", "min_slice_area", "min_extent")
        }
        summary[variant]["val_mean_dice"] = chosen["val_mean_dice"]
        print(
            f"{variant}: {report['n_patients']} test patients of fold {fold}: mean {report['mean_dice']:.3f} "
            f"median {report['median_dice']:.3f} min {report['min_dice']:.3f} "
            f"(validation {chosen['val_mean_dice']:.3f})"
        )
    paired = paired_summary([dice["average"][name] - dice["trained"][name] for name in dice["trained"]])
    print(
        f"average - trained: {paired.mean:+.3f} (95% CI {paired.low:+.3f} to {paired.high:+.3f}), "
        f"{paired.n_better} better"
    )
    result = {"run": str(args.run), "fold": fold, "epoch": run.state()["epoch"] + 1, **summary}
    result["paired"] = paired.to_dict()
    (args.out / "ema_compare.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    run_script(main)
