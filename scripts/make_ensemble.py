"""Assemble an ensemble folder from finished runs that share their validation patients.

Each ``NAME=RUN`` copies ``RUN/best.safetensors`` to ``OUT/NAME.safetensors``; the runs'
``split.json`` must list the same validation patients (and the same test patients, when they have
any), which become the patients that choose the ensemble's rule. ``ensemble.json`` is written
uncalibrated; then choose the rule for the mean of the members on those patients::

    python scripts/make_ensemble.py --out src/lggseg/model/weights/accurate \\
        --member v3_fold0=docs/cv/fold_0/run --member v2_fold0=docs/cv_v2/fold_0/run \\
        --member v4_fold0=docs/cv_v4/fold_0/run --member v5_fold0=docs/cv_v5/fold_0/run
    lggseg calibrate src/lggseg/model/weights/accurate --data ../shared/data/lgg/kaggle_3m

That is how the packaged accurate ensemble (``--accurate``) was made (MODEL_CARD.md, "Accurate mode").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lggseg.errors import run_script
from lggseg.infer.ensemble import write_manifest
from lggseg.model.bundle import BEST_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="ensemble folder to write")
    parser.add_argument("--member", action="append", required=True, help="NAME=RUN_FOLDER (two or more)")
    parser.add_argument("--description", default="", help="one line recorded in ensemble.json")
    args = parser.parse_args(argv)
    members = [m.split("=", 1) for m in args.member]
    if len(members) < 2 or any(len(m) != 2 or not m[0] for m in members):
        print("error: give two or more --member NAME=RUN_FOLDER", file=sys.stderr)
        return 2
    splits = [json.loads((Path(run) / "split.json").read_text()) for _, run in members]
    for (_, run), split in zip(members[1:], splits[1:]):
        for role in ("validation", "test"):
            if sorted(split.get(role, [])) != sorted(splits[0].get(role, [])):
                print(f"error: {run}: its {role} patients differ from {members[0][1]}'s", file=sys.stderr)
                return 2
    args.out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, run in members:
        target = args.out / f"{name}.safetensors"
        shutil.copyfile(Path(run) / BEST_NAME, target)
        files.append(target)
    write_manifest(args.out, files, splits[0]["validation"], args.description)
    print(f"wrote {args.out}: {len(files)} members; now run lggseg calibrate {args.out} --data DATA")
    return 0


if __name__ == "__main__":
    run_script(main)
