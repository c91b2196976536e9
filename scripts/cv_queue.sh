#!/usr/bin/env bash
# Train cross-validation folds one after another from a frozen copy of the code, so that work on
# the repository never changes a running job (issue 10: the CV runs for hours, across sessions).
#
#   bash scripts/cv_queue.sh RUNS COMMIT CONFIG:FOLD [CONFIG:FOLD ...]
#   e.g. nohup bash scripts/cv_queue.sh ../runs HEAD lgg_unet8_v3.yaml:4 lgg_unet8_v3_seed43.yaml:4 > queue.log 2>&1 &
#
# RUNS/worktree_<commit> is a `git worktree` of COMMIT (made once, reused after). Each job runs
# `lggseg cv --only-fold FOLD` with configs/CONFIG of that worktree into RUNS/cv_<config name>,
# logs to RUNS/cv_<config name>/fold_FOLD.log and appends a line to RUNS/done.txt. A fold that
# finished is skipped by `lggseg cv` itself; an interrupted one resumes from its checkpoint. So the
# same command, run again, carries on where the last one stopped. Publish each finished fold at
# once: bash scripts/publish_cv.sh RUNS/cv_<config name> docs/<name>.
set -euo pipefail
runs=${1:?usage: bash scripts/cv_queue.sh RUNS COMMIT CONFIG:FOLD [CONFIG:FOLD ...]}
commit=${2:?usage: bash scripts/cv_queue.sh RUNS COMMIT CONFIG:FOLD [CONFIG:FOLD ...]}
shift 2
[ $# -gt 0 ] || { echo "error: no CONFIG:FOLD job given" >&2; exit 2; }
data=${LGGSEG_DATA:-../shared/data/lgg/kaggle_3m}
python=${LGGSEG_PYTHON:-$(pwd)/.venv/bin/python}
[ -d "$data" ] || { echo "error: $data: no such data folder (set LGGSEG_DATA)" >&2; exit 2; }
[ -x "$python" ] || { echo "error: $python: no Python with lggseg's dependencies (run scripts/setup.sh or set LGGSEG_PYTHON)" >&2; exit 2; }
data=$(cd "$data" && pwd)
sha=$(git rev-parse --short=8 "$commit^{commit}") || { echo "error: $commit: not a commit" >&2; exit 2; }
mkdir -p "$runs"
runs=$(cd "$runs" && pwd)
tree="$runs/worktree_$sha"
[ -d "$tree" ] || git worktree add --detach "$tree" "$sha"
for job in "$@"; do
  config=${job%%:*}
  fold=${job##*:}
  [ -f "$tree/configs/$config" ] || { echo "error: $config: not in configs/ at $sha" >&2; exit 2; }
  name=$(basename "$config" .yaml)
  out="$runs/cv_$name"
  mkdir -p "$out"
  echo "$(date -u +%FT%TZ) $name fold $fold: started from $sha"
  status=0
  (cd "$tree" && PYTHONPATH="$tree/src" "$python" -m lggseg cv --data "$data" --config "configs/$config" \
    --out "$out" --only-fold "$fold") > "$out/fold_$fold.log" 2>&1 || status=$?
  echo "$(date -u +%FT%TZ) $name fold $fold: exit $status (code $sha)" | tee -a "$runs/done.txt"
done
