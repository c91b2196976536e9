"""Ablation: the first-round (v1) fold-0 network with the new post-processing rules.

v1 shipped with "keep the largest 3D component", which zeroed a patient outside this data set.
This script re-chooses v1's post-processing from ``lggseg.train.calibrate.RULES`` on v1's own
8 validation patients and evaluates the result on the 21 fold-0 test patients, so v1 and the v2
recipe can be compared under the same kind of post-processing (MODEL_CARD.md, "Recipes on fold 0, and the ablations").

    python scripts/v1_safe_postprocess.py ../shared/data/lgg/kaggle_3m docs/v1_fold0/safe_postprocess.json
"""

import json
import statistics
import sys

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.evaluation import metrics
from lggseg.infer import postprocess
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.model.bundle import load_weights
from lggseg.train.calibrate import RULES, score, select_rule

data = sys.argv[1]
named = index_dataset(data).by_name()
split = json.load(open("docs/v1_fold0/split.json"))
bundle = load_weights("docs/v1_fold0/best.safetensors")
seg = Segmenter(bundle, config=InferenceConfig())
val = [load_volume(named[n]) for n in split["validation"]]
probs = [seg.probabilities(v.images) for v in val]
scores = [score(probs, [v.require_masks() for v in val], r) for r in RULES]
for s in scores:
    print(f"{s.mean_dice:.4f} {s.false_positive_slices} {s.rule}")
best = select_rule(scores)
chosen = best.rule
print("chosen", chosen, best.mean_dice)
rows = []
for n in split["test"]:
    v = load_volume(named[n])
    p = seg.probabilities(v.images)
    rows.append({"patient": n, **metrics.patient_metrics(postprocess.apply(p, chosen), v.masks)})
    rows[-1]["plain"] = metrics.dice(p > 0.5, v.masks)
summ = metrics.summarize(rows)
print({k: summ[k] for k in ["mean_dice", "median_dice", "min_dice", "false_positive_rate_empty_slices", "mean_hd95"]})
print("plain 0.5:", statistics.fmean(r["plain"] for r in rows), min(r["plain"] for r in rows))
json.dump(
    {"chosen": best.to_dict(), "val_scores": [s.to_dict() for s in scores], "summary": summ, "rows": rows},
    open(sys.argv[2] if len(sys.argv) > 2 else "v1_safe_postprocess.json", "w"),
    indent=1,
    default=str,
)
