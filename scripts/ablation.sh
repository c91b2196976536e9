#!/usr/bin/env bash
# Issue 10 ablations: every variant of configs/ablation/ on folds 0 and 1, short schedule, resumable.
#   bash scripts/ablation.sh ABL [VARIANT...]      (default: every configs/ablation/*.yaml)
#   python scripts/ablation_table.py ABL           (the table: Dice, FP rate, train minutes, ms/slice)
# Each variant is an `lggseg cv` folder (ABL/<variant>): fold models, test reports, and the merged
# report over the two folds' 40 test patients. Rerun after an interruption: finished folds are kept.
set -euo pipefail
out=${1:?usage: bash scripts/ablation.sh ABL [VARIANT...]}
shift
data=${LGGSEG_DATA:-../shared/data/lgg/kaggle_3m}
lggseg=$(command -v lggseg || echo .venv/bin/lggseg)
variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  variants=($(ls configs/ablation/*.yaml | xargs -n1 basename | sed 's/\.yaml$//'))
fi
# Fold-major: fold 0 of every variant first, so a first comparison exists after one pass.
for fold in 0 1; do
  for variant in "${variants[@]}"; do
    "$lggseg" cv --data "$data" --config "configs/ablation/$variant.yaml" --out "$out/$variant" --only-fold "$fold"
  done
done
for variant in "${variants[@]}"; do
  "$lggseg" cv --data "$data" --config "configs/ablation/$variant.yaml" --out "$out/$variant" --folds 2 --merge-only
done
