"""Output helpers of the shape report: atomic CSV/text writes, box plots, Bland-Altman, ``report.md``.

Rows are dicts with the ``features.csv`` / ``associations.csv`` columns; feature columns are
``(n,)`` float arrays once extracted with :func:`column`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from lggseg.io import atomic
from lggseg.shape import stats
from lggseg.shape.features import NUMERIC_FEATURES

Row = Mapping[str, object]

PAPER_REPORTED: tuple[tuple[str, str, float], ...] = (
    # (feature, genomic subtype, reported bound "p < x"): Fisher exact tests on 110 patients with the
    # authors' automatic segmentations, from the abstract of Buda, Saha & Mazurowski, Comput Biol Med
    # 109 (2019) 218-225, arXiv:1906.03720. The abstract gives bounds only, and says that BEVR was
    # associated with "all tested molecular subtypes" (p < 0.02) without listing them here; check the
    # paper's results table for the tested subtypes and the exact values before quoting a row.
    ("bevr", "RNASeqCluster", 0.0002),
    ("margin_fluctuation", "RNASeqCluster", 0.005),
    ("angular_sd", "RNASeqCluster", 0.02),
    ("bevr", "MethylationCluster", 0.02),
    ("bevr", "CNCluster", 0.02),
    ("bevr", "miRNACluster", 0.02),
    ("bevr", "COCCluster", 0.02),
    ("bevr", "OncosignCluster", 0.02),
)
PAPER_ALPHA = 0.005
"""The paper's significance level: 0.05, Bonferroni-corrected for its 10 hypotheses."""


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Create ``target`` by ``write(tmp)`` on a temporary file in the same folder, then rename it (fsynced)."""
    atomic.write_with(target, write)


def write_text(target: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    atomic.write_text(target, text)


def fmt(value: object) -> str:
    """CSV/Markdown cell: floats with 6 significant digits, NaN as an empty cell."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(target: Path, columns: Sequence[str], rows: Iterable[Row]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([fmt(row.get(c, "")) for c in columns])
    write_text(target, buffer.getvalue())


def column(rows: Sequence[Row], feature: str) -> np.ndarray:
    """``(n,)`` float values of one feature over the rows."""
    return np.array([float(r[feature]) for r in rows], dtype=float)  # type: ignore[arg-type]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def boxplots(rows: Sequence[Row], labels: Mapping[str, Sequence[str]], features: Sequence[str], target: Path) -> None:
    """A grid of box plots: one row per feature, one column per genomic subtype (``labels[genomic]``
    holds the cluster of each row, "" when missing)."""
    plt = _pyplot()
    genomics = list(labels)
    fig, axes = plt.subplots(
        len(features), len(genomics), figsize=(2.4 * len(genomics), 2.2 * len(features)), squeeze=False
    )
    for i, feature in enumerate(features):
        values = column(rows, feature)
        for j, genomic in enumerate(genomics):
            lab = np.asarray(labels[genomic], dtype=object)
            groups = sorted({str(g) for g in lab if g}, key=stats.natural_key)
            ax = axes[i, j]
            if groups:
                ax.boxplot([values[(lab == g) & np.isfinite(values)] for g in groups])
                ax.set_xticks(range(1, len(groups) + 1), groups)
            ax.set_title(genomic if i == 0 else "", fontsize=8)
            ax.set_ylabel(feature if j == 0 else "", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


def bland_altman(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], target: Path) -> None:
    """One Bland-Altman panel per feature from ``(automatic, manual)`` ``(n,)`` arrays."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs), 3.0), squeeze=False)
    for ax, (feature, (auto, manual)) in zip(axes[0], pairs.items()):
        ok = np.isfinite(auto) & np.isfinite(manual)
        ax.scatter((auto[ok] + manual[ok]) / 2, auto[ok] - manual[ok], s=8)
        a = stats.agreement(auto, manual)
        for y, style in ((a.mean_difference, "-"), (a.loa_low, "--"), (a.loa_high, "--")):
            if math.isfinite(y):
                ax.axhline(y, color="k", linestyle=style, linewidth=0.8)
        ax.set_title(feature, fontsize=9)
        ax.set_xlabel("mean of automatic and manual", fontsize=8)
        ax.set_ylabel("automatic - manual", fontsize=8)
    fig.tight_layout()
    atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _fisher_p(assoc: Sequence[Row], masks: str, feature: str, genomic: str, test: str) -> float:
    for r in assoc:
        if (r["masks"], r["feature"], r["genomic"], r["test"], r["correction"]) == (
            masks,
            feature,
            genomic,
            test,
            "bonferroni",
        ):
            return float(r["p_value"])  # type: ignore[arg-type]
    return math.nan


def verdict(ours: float, bound: float) -> str:
    """Plain words for one row: our uncorrected p against the paper's reported bound."""
    if math.isnan(ours):
        return "not testable here"
    if ours < bound:
        return "consistent: ours is below the reported bound"
    return "differs: weaker here" + (" (still p < 0.05)" if ours < 0.05 else " (not even p < 0.05)")


_WHY = (
    "\nWhy the numbers can differ: this release has 100 patients (the paper: 110), and some lack a "
    "cluster (see n in `associations.csv`); the masks come from another segmentation model (or are the "
    "manual ones); the feature code is an independent implementation whose free parameters (smoothing "
    "window, angular bins, ellipsoid around voxel corners) need not match the authors' code; and with "
    "a median split of ~100 patients a few patients changing side move a p-value by an order of magnitude.\n"
)


def report_markdown(
    info: Mapping[str, Any],
    rows: Sequence[Row],
    assoc: Sequence[Row],
    sources: Sequence[str],
    comparison: Mapping[str, Any] | None,
) -> str:
    """The text of ``report.md``: features, the association table beside the paper's, agreement."""
    md = ["# Tumor shape and genomic subtypes (reproduction of Buda et al. 2019)\n\n"]
    md.append(
        f"Data: `{info['data_dir']}`; {len(rows)} patients with masks from **{info['masks']}** "
        f"({info.get('mask_detail', info['masks'])}); spacing: {info['spacing']}; run time "
        f"{info['seconds']:.1f} s. Definitions and every choice the papers leave open: `docs/radiogenomics.md`.\n\n"
    )
    md += [f"> {note}\n\n" for note in info.get("notes", ())]
    md.append(
        "## Features\n\n"
        "Lengths, areas and volumes are in voxel units unless a spacing is given (then mm, mm^2 and mL); "
        "`surface_area` counts exposed voxel faces.\n\n"
    )
    body = []
    for feature in NUMERIC_FEATURES:
        v = column(rows, feature)
        v = v[np.isfinite(v)]
        quartiles: list[object] = ["", "", ""]
        if v.size:
            quartiles = [float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75))]
        body.append([feature, v.size, *quartiles])
    md.append(markdown_table(["feature", "n", "median", "q1", "q3"], body))
    if not assoc:
        md.append("\nNo `data.csv` beside the data: features only, no association tests.\n")
        return "".join(md)
    md.append(
        "\n## Associations beside the paper\n\nFisher exact test of the median-split feature against the "
        "clusters (2 x k, exact Freeman-Halton), uncorrected p as the paper reports it; the paper calls "
        f"p < {PAPER_ALPHA} significant (0.05 Bonferroni-corrected for its 10 hypotheses). Kruskal-Wallis "
        "p as a second view. Paper column: bounds from the abstract of Buda et al. 2019 (110 patients, "
        "their U-Net's masks).\n\n"
    )
    header = ["feature", "genomic", "paper p"] + [f"Fisher p ({s})" for s in sources]
    header += [f"KW p ({s})" for s in sources] + ["verdict"]
    body = []
    for feature, genomic, bound in PAPER_REPORTED:
        fisher = [_fisher_p(assoc, s, feature, genomic, "fisher") for s in sources]
        kw = [_fisher_p(assoc, s, feature, genomic, "kruskal") for s in sources]
        body.append([feature, genomic, f"< {bound:g}", *fisher, *kw, verdict(fisher[0], bound)])
    md.append(markdown_table(header, body) + _WHY)
    top = [r for r in assoc if r["correction"] == "bonferroni" and r["masks"] == sources[0]][:12]
    md.append("\n## Strongest associations (all features, both tests)\n\n")
    md.append(
        markdown_table(
            ["feature", "genomic", "test", "p", "Bonferroni p", "family", "n"],
            [[r["feature"], r["genomic"], r["test"], r["p_value"], r["p_corrected"], r["family"], r["n"]] for r in top],
        )
    )
    md.append(
        "\nBonferroni and Holm are applied within a family: one test (Fisher or Kruskal-Wallis) over the "
        "three paper features x all subtypes (`paper`), or over the other features (`extra`).\n\n"
        "![box plots](boxplots.png)\n"
    )
    if comparison:
        md.append(
            f"\n## Automatic against manual masks\n\n{comparison['n']} patients with both. Bland-Altman: "
            "difference = automatic - manual, limits of agreement = mean +- 1.96 SD.\n\n"
        )
        md.append(
            markdown_table(
                ["feature", "n", "Spearman rho", "mean difference", "LoA low", "LoA high"],
                [
                    [f, a.n, a.spearman_rho, a.mean_difference, a.loa_low, a.loa_high]
                    for f, a in comparison["agreement"].items()
                ],
            )
        )
        md.append(
            "\nRNASeq-cluster ROC AUC, one cluster against the rest, from each set of masks (the paper "
            "found the automatic AUCs comparable to the manual ones):\n\n"
        )
        md.append(markdown_table(["feature", "cluster", "AUC manual", "AUC automatic"], comparison["auc_rows"]))
        md.append("\n![Bland-Altman](bland_altman.png)\n")
    return "".join(md)
