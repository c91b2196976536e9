#!/usr/bin/env bash
# Copy a cross-validation folder's report into the repository (docs/cv by default): the merged
# out-of-fold report, and per fold its test report, its training record and its weights.
# Usage: bash scripts/publish_cv.sh CV_DIR [DEST] [--light]
#   --light: numbers and training records only, no weights and no overlay images (the ablations)
set -euo pipefail
src="${1:?usage: publish_cv.sh CV_DIR [DEST] [--light]}"
dest="${2:-docs/cv}"
weights=best.safetensors
overlays=overlays.png
if [ "${3:-}" = "--light" ]; then weights=""; overlays=""; fi
mkdir -p "$dest"
for f in metrics.json per_patient.csv per_fold.csv per_institution.csv per_tumor_size.csv dice_per_patient.png dice_by_group.png $overlays; do
  [ -f "$src/$f" ] && cp "$src/$f" "$dest/$f"
done
for fold in "$src"/fold_*; do
  k="$(basename "$fold")"
  [ -f "$fold/test/metrics.json" ] || continue
  mkdir -p "$dest/$k/test" "$dest/$k/run"
  for f in metrics.json per_patient.csv dice_per_patient.png $overlays; do
    [ -f "$fold/test/$f" ] && cp "$fold/test/$f" "$dest/$k/test/$f"
  done
  for f in config.yaml split.json log.csv curves.png calibration.json $weights; do
    [ -f "$fold/run/$f" ] && cp "$fold/run/$f" "$dest/$k/run/$f"
  done
done
# reports written by older versions cite the design brief that the repository does not contain
find "$dest" -name metrics.json -exec sed -i -E 's|\(D[E]SIGN\.md\)|(docs/protocol.md)|' {} +
# the reports name the weights they scored by the run folder's path: name the published copy instead
find "$dest" -name metrics.json -exec sed -i "s|\"$src/|\"$dest/|g" {} +
echo "published $src -> $dest"
