"""Regenerate ``src/lggseg/shape/cohort_features.csv``: the cohort reference of the web page's Shape panel.

Shape features (volume in voxels, BEVR, margin fluctuation, angular SD) of every patient's
GROUND-TRUTH mask in a ``kaggle_3m`` folder, in voxel units, computed by ``lggseg.shape.features``
(see docs/radiogenomics.md). Derived numbers only, no images.

    nice -n 10 .venv/bin/python scripts/make_cohort_features.py ../shared/data/lgg/kaggle_3m
    nice -n 10 .venv/bin/python scripts/make_cohort_features.py DATA --out elsewhere.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lggseg.shape.cohort import COHORT_FILE, compute_cohort_rows, write_cohort_table

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "lggseg" / "shape" / COHORT_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a kaggle_3m folder (patient folders with *_mask.tif)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output CSV (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    rows = compute_cohort_rows(args.data)
    write_cohort_table(rows, args.out)
    print(f"{len(rows)} patients -> {args.out} ({time.perf_counter() - began:.1f} s)")


if __name__ == "__main__":
    main()
