"""Render an ``lggseg evaluate`` or ``lggseg cv`` metrics.json as the Markdown tables of MODEL_CARD.md.

python scripts/metrics_table.py EV/metrics.json
python scripts/metrics_table.py docs/cv/metrics.json     # adds the per-fold, per-institution and per-tumor-size tables
"""

from __future__ import annotations

import json
import signal
import sys


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main(path: str) -> None:
    report = json.load(open(path))
    print(
        "| patients | mean Dice | median Dice | min Dice | mean IoU | median HD95 (vox) | mean abs. volume error (vox) "
        "| Dice on tumor slices | FP rate on tumor-free slices |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {report['n_patients']} | {fmt(report['mean_dice'])} | {fmt(report['median_dice'])} | "
        f"{fmt(report['min_dice'])} | "
        f"{fmt(report['mean_iou'])} | {fmt(report['median_hd95'], 1)} | {fmt(report['mean_abs_volume_error'], 0)} | "
        f"{fmt(report['mean_dice_tumor_slices'])} | {fmt(report['false_positive_rate_empty_slices'])} |"
    )
    if "mean_dice_ci95" in report:
        low, high = report["mean_dice_ci95"]
        print(f"\n95% interval of the mean Dice ({report['mean_dice_ci95_method']}): {low:.3f} to {high:.3f}")
    if "folds" in report:
        print(
            "\n| fold | patients | mean Dice | median | min | FP rate on tumor-free slices "
            "| post-processing chosen on validation |"
        )
        print("|---|---|---|---|---|---|---|")
        for fold in report["folds"]:
            post = fold["postprocess"]
            rule = f"threshold {post['threshold']}, min component {post['min_component']}"
            rule += f", min peak {post.get('min_peak', 0)}, min slice area {post.get('min_slice_area', 0)} px"
            rule += f", min extent {post.get('min_extent', 0)} slices, min end core {post.get('min_end_core', 0)} px"
            rule += ", holes filled" if post.get("fill_holes") else ""
            print(
                f"| {fold['fold']} | {fold['n_patients']} | {fmt(fold['mean_dice'])} | {fmt(fold['median_dice'])} | "
                f"{fmt(fold['min_dice'])} | {fmt(fold.get('false_positive_rate_empty_slices'))} | {rule} |"
            )
    groups = (("institutions", "institution", "institution"), ("tumor_sizes", "tumor_voxels", "tumor voxels"))
    for key, column, title in groups:
        if key not in report:
            continue
        print(f"\n| {title} | patients | mean Dice | median | min | FP rate on tumor-free slices |")
        print("|---|---|---|---|---|---|")
        for row in report[key]:
            print(
                f"| {row[column]} | {row['n_patients']} | {fmt(row['mean_dice'])} | {fmt(row['median_dice'])} | "
                f"{fmt(row['min_dice'])} | {fmt(row['false_positive_rate_empty_slices'])} |"
            )
    print()
    print(
        "| patient | Dice | IoU | HD95 (vox) | true volume (vox) | predicted volume (vox) | FP slices / tumor-free "
        "slices |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in sorted(report["per_patient"], key=lambda r: r["dice"]):
        print(
            f"| {row['patient']} | {fmt(row['dice'])} | {fmt(row['iou'])} | {fmt(row['hd95'], 1)} | "
            f"{row['volume_true']} | "
            f"{row['volume_pred']} | {row['n_false_positive_slices']} / {row['n_empty_slices']} |"
        )


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the table quietly
    main(sys.argv[1])
