"""Cohort run: masks -> ``features.csv``, ``associations.csv``, box plots and ``report.md``.

Reproduces the analysis of Buda, Saha & Mazurowski, Comput Biol Med 109 (2019) 218-225
(arXiv:1906.03720) on a folder in the ``kaggle_3m`` layout. Mask sources (see
:mod:`lggseg.shape.sources`):

* ``"truth"``: the data set's ``<patient>_<n>_mask.tif`` files;
* a folder (``Path``): NIfTI volumes or per-slice PNG/TIFF masks, taken as automatic masks;
* ``"predicted"``: masks from ``predict_masks(patient)``, from ``predicted_masks_dir``, or made
  here by a U-Net: the out-of-fold models of a cross-validation folder (``cv_dir``), else one
  weights file (``weights``; None = the shipped model, which saw most of these patients).

When the primary source is automatic and the data set has ground truth (or the primary source is
``"truth"`` and an automatic source is given), the automatic-vs-manual section is added.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from lggseg.data.dataset import DatasetIndex, index_dataset
from lggseg.errors import LggsegError
from lggseg.io.images import display_path
from lggseg.io.progress import track
from lggseg.shape import render, stats
from lggseg.shape.features import FEATURE_COLUMNS, NUMERIC_FEATURES, PAPER_FEATURES, shape_features
from lggseg.shape.render import column, write_csv
from lggseg.shape.sources import (
    MaskLoader,
    MaskOrigin,
    RunCheck,
    cv_weights,
    folder_source,
    model_source,
    patient_id,
    saving_source,
    truth_source,
)

if TYPE_CHECKING:
    from lggseg.infer.segmenter import InferenceConfig

__all__ = ["MaskLoader", "folder_source", "patient_id", "run_shape_analysis"]

GENOMIC_COLUMNS = (
    "RNASeqCluster",
    "MethylationCluster",
    "miRNACluster",
    "CNCluster",
    "RPPACluster",
    "OncosignCluster",
    "COCCluster",
)
"""The genomic subtypes of ``data.csv`` tested by default."""
ASSOCIATION_COLUMNS = (
    "masks",
    "feature",
    "genomic",
    "test",
    "statistic",
    "p_value",
    "correction",
    "p_corrected",
    "n",
    "family",
)
ORIGIN_COLUMNS = ("patient", "fold", "weights", "weights_sha256", "model_fold", "out_of_fold")
"""Columns of ``mask_sources.csv``: which model segmented each patient (see :class:`MaskOrigin`)."""


def read_genomics(path: Path) -> dict[str, dict[str, str]]:
    """``data.csv`` -> ``{Patient: {column: value}}`` (values as text, "" when missing)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = csv.DictReader(handle)
        if "Patient" not in (rows.fieldnames or []):
            raise LggsegError(f"{display_path(path)}: no 'Patient' column; cannot join the genomic subtypes")
        return {row["Patient"].strip(): {k: (v or "").strip() for k, v in row.items() if k} for row in rows}


def compute_features(
    names: Sequence[str],
    loader: MaskLoader,
    spacing: Sequence[float] | None,
    log: Callable[[str], None],
    progress: bool = False,
    label: str = "shape features",
) -> list[dict[str, object]]:
    """One ``features.csv`` row per patient that the loader has a mask for.

    ``progress``: a progress bar instead of a log line every 20 patients.
    """
    rows: list[dict[str, object]] = []
    skipped: list[str] = []
    for i, name in enumerate(track(names, label) if progress else names, 1):
        mask = loader(name)
        if mask is None:
            skipped.append(name)
        else:
            rows.append(shape_features(name, mask, spacing).as_row())
        if not progress and (i % 20 == 0 or i == len(names)):
            log(f"  {i}/{len(names)} patients")
    if skipped:
        log(
            f"  {len(skipped)} patient(s) without a mask in this source, skipped: {', '.join(skipped[:5])}"
            + (", ..." if len(skipped) > 5 else "")
        )
    return rows


def cluster_labels(rows: Sequence[dict[str, object]], genomics: dict[str, dict[str, str]], genomic: str) -> list[str]:
    """The ``genomic`` cluster of each row's patient ("" when unknown)."""
    return [genomics.get(patient_id(str(r["patient"])), {}).get(genomic, "") for r in rows]


def associations(
    rows: Sequence[dict[str, object]], genomics: dict[str, dict[str, str]], columns: Sequence[str], masks: str
) -> list[dict[str, object]]:
    """Fisher (median split) and Kruskal-Wallis for every feature x genomic column, corrected.

    Correction families: per test, the three paper features together, and the other features.
    Sorted by uncorrected p (NaN last).
    """
    tests: list[dict[str, object]] = []
    for feature in NUMERIC_FEATURES:
        values = column(rows, feature)
        if not np.isfinite(values).any():
            continue
        family = "paper" if feature in PAPER_FEATURES else "extra"
        for genomic in columns:
            labels = cluster_labels(rows, genomics, genomic)
            for result in (stats.fisher_median_test(values, labels), stats.kruskal_test(values, labels)):
                tests.append(
                    {
                        "masks": masks,
                        "feature": feature,
                        "genomic": genomic,
                        "test": result.test,
                        "statistic": result.statistic,
                        "p_value": result.p_value,
                        "n": result.n,
                        "family": family,
                    }
                )
    out: list[dict[str, object]] = []
    for correction, method in stats.CORRECTIONS.items():
        for key in sorted({(str(t["test"]), str(t["family"])) for t in tests}):
            group = [t for t in tests if (t["test"], t["family"]) == key]
            adjusted = method([float(t["p_value"]) for t in group])  # type: ignore[arg-type]
            out += [{**t, "correction": correction, "p_corrected": float(p)} for t, p in zip(group, adjusted)]

    def order(r: dict[str, object]) -> tuple[float, str, str, str, str]:
        p = float(r["p_value"])  # type: ignore[arg-type]
        return (2.0 if math.isnan(p) else p, str(r["feature"]), str(r["genomic"]), str(r["test"]), str(r["correction"]))

    return sorted(out, key=order)


def _model_note(origins: Sequence[MaskOrigin], cv_dir: Path | None, weights: str | Path | None) -> str:
    """Plain words on whether the model-made masks are out-of-fold (for ``report.md``)."""
    if cv_dir is not None:
        return (
            f"Out-of-fold masks: each patient was segmented by the model of its canonical fold in `{cv_dir}` "
            "(`fold_<k>/run/best.safetensors`), which never saw that patient in training; these are "
            '"automatic" masks in the paper\'s sense. Which model made each mask: `mask_sources.csv`.'
        )
    seen = sum(o.out_of_fold == "no" for o in origins)
    unseen = sum(o.out_of_fold == "yes" for o in origins)
    folds = sorted({o.model_fold for o in origins if o.model_fold is not None and o.model_fold >= 0})
    model = "the shipped model" if weights is None else f"the model `{weights}`"
    if seen == 0 and unseen == 0:
        return (
            f"**Not known to be out-of-fold.** One model segmented every patient ({model}), and its weights do not "
            'record which patients it was trained on; its features are not "automatic" in the paper\'s sense '
            "unless it never saw these patients. Use `--cv` for out-of-fold masks."
        )
    held_out = f"held out canonical fold {', '.join(map(str, folds))} only" if folds else ""
    if seen == 0 and unseen == len(origins):
        if not held_out:
            return (
                f"Out-of-fold for these patients: {model} never saw any of these {unseen} patients in training "
                "(its weights list the patients it was trained on). Per patient: `mask_sources.csv`."
            )
        return (
            f"Out-of-fold for these patients: {model} {held_out}, and all {unseen} of them are in that fold, so "
            "it never saw them in training. Per patient: `mask_sources.csv`."
        )
    most = " (most of them)" if seen > len(origins) / 2 else ""
    how = (
        f"It {held_out} and was trained (with its validation patients) on the other folds"
        if held_out
        else "Its weights list the patients it was trained on"
    )
    return (
        f"**Not out-of-fold: {model} was trained on {seen} of these {len(origins)} patients{most}.** {how}; "
        f"{unseen} patients are unseen by it. "
        'Features from its masks are therefore not "automatic" in the paper\'s sense, and their agreement with '
        "the manual masks is optimistic. For out-of-fold masks of every patient, finish the 5-fold "
        "cross-validation (`lggseg cv`) and pass `--cv`. Per patient: `mask_sources.csv`."
    )


def _automatic_source(
    index: DatasetIndex,
    predicted_masks_dir: str | Path | None,
    predict_masks: MaskLoader | None,
    cv_dir: str | Path | None,
    weights: str | Path | None,
    inference: InferenceConfig | None,
    check_run: RunCheck | None,
    origins: list[MaskOrigin],
) -> tuple[MaskLoader, str]:
    """The automatic masks for ``masks="predicted"`` and where they come from, in words."""
    if (predict_masks is not None or predicted_masks_dir is not None) and (cv_dir is not None or weights):
        raise LggsegError("give either ready masks (a function or a folder) or a model (--cv / --weights), not both")
    if predict_masks is not None:
        return predict_masks, "masks from a caller-supplied function"
    if predicted_masks_dir is not None:
        return folder_source(predicted_masks_dir), f"masks read from `{predicted_masks_dir}`"
    names = [p.name for p in index.patients]
    if cv_dir is not None:
        if weights is not None:
            raise LggsegError("--weights and --cv exclude each other: --cv takes each fold's own model")
        by_patient = cv_weights(cv_dir, names, check_run)
        loader = model_source(index, by_patient.__getitem__, inference, origins, out_of_fold_only=True)
        return loader, f"out-of-fold predictions of the cross-validation in `{cv_dir}`"
    single = Path(weights) if weights is not None else None
    loader = model_source(index, lambda _: single, inference, origins)
    return loader, f"predictions of the model `{weights}`" if weights else "predictions of the shipped model"


def run_shape_analysis(
    data_dir: str | Path,
    out_dir: str | Path,
    masks: str | Path = "truth",
    predicted_masks_dir: str | Path | None = None,
    predict_masks: MaskLoader | None = None,
    spacing: Sequence[float] | None = None,
    genomic_columns: Sequence[str] | None = None,
    per_feature_plots: bool = True,
    log: Callable[[str], None] = print,
    *,
    cv_dir: str | Path | None = None,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    save_masks: bool = False,
    check_run: RunCheck | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the cohort analysis and write its files to ``out_dir``; returns paths and results.

    ``masks``: ``"truth"``, ``"predicted"`` or a mask folder (taken as automatic masks).
    ``"predicted"`` takes, in this order: ``predict_masks`` (patient -> ``(Z, H, W)`` bool),
    ``predicted_masks_dir``, the out-of-fold models of ``cv_dir`` (``fold_<k>/run/best.safetensors``;
    ``check_run(run_dir)`` may veto an unfinished fold), else the model ``weights`` (None: the shipped
    one). ``save_masks``: also write each predicted mask to ``out_dir/masks/<patient>_mask.nii.gz``.
    ``spacing``: ``(z, y, x)`` mm for every patient, or None (voxel units; ``volume_ml`` empty).

    Writes ``features.csv`` (+ ``features_<other>.csv`` when a second source is available), with
    ``data.csv``: ``associations.csv``, ``boxplots.png``, ``boxplot_<feature>.png``; with both
    sources: ``agreement.csv``, ``auc.csv``, ``bland_altman.png``; with a model:
    ``mask_sources.csv``; always ``report.md``. Bad input raises :class:`LggsegError`.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    index = index_dataset(data_dir)
    names = [p.name for p in index.patients]
    truth = truth_source(index)
    origins: list[MaskOrigin] = []
    notes: list[str] = []
    model_options = cv_dir is not None or weights is not None or save_masks
    automatic: MaskLoader | None
    if isinstance(masks, Path) or masks not in ("truth", "predicted"):
        if model_options:
            raise LggsegError("--cv, --weights and --save-masks apply to --masks predicted, not to a mask folder")
        automatic, detail, masks = folder_source(masks), f"masks read from `{masks}`", "predicted"
    elif masks == "predicted":
        automatic, detail = _automatic_source(
            index, predicted_masks_dir, predict_masks, cv_dir, weights, inference, check_run, origins
        )
        if save_masks:
            automatic = saving_source(automatic, out / "masks", spacing)
    else:
        if model_options:
            raise LggsegError("--cv, --weights and --save-masks apply to --masks predicted, not to --masks truth")
        if truth is None:
            raise LggsegError(f"{display_path(index.root)}: has no ground-truth masks (<patient>_<n>_mask.tif)")
        automatic = predict_masks or (folder_source(predicted_masks_dir) if predicted_masks_dir else None)
        detail = "the data set's manual masks"
    primary, secondary = (truth, automatic) if masks == "truth" else (automatic, truth)
    assert primary is not None
    other = "predicted" if masks == "truth" else "truth"
    sources = [masks] + ([other] if secondary is not None else [])
    rows: dict[str, list[dict[str, object]]] = {}
    written: dict[str, Path] = {}
    for source, loader in ((masks, primary), (other, secondary)):
        if loader is not None:
            log(f"shape features from {source} masks of {len(names)} patients")
            rows[source] = compute_features(names, loader, spacing, log, progress, f"{source} masks")
            name = "features" if source == masks else f"features_{source}"
            written[name] = out / f"{name}.csv"
            write_csv(written[name], FEATURE_COLUMNS, rows[source])
    if origins:
        written["mask_sources"] = out / "mask_sources.csv"
        write_csv(written["mask_sources"], ORIGIN_COLUMNS, [vars(o) for o in origins])
        notes.append(_model_note(origins, Path(cv_dir) if cv_dir is not None else None, weights))
    if save_masks:
        notes.append(f"The predicted masks are saved as NIfTI in `{out / 'masks'}` (read back with `--masks`).")
    csv_path = next((p for p in (index.root / "data.csv", Path(data_dir) / "data.csv") if p.is_file()), None)
    genomics = read_genomics(csv_path) if csv_path else {}
    columns = [c for c in (genomic_columns or GENOMIC_COLUMNS) if any(c in g for g in genomics.values())]
    assoc: list[dict[str, object]] = []
    if genomics and rows[masks]:
        for source in sources:
            assoc += associations(rows[source], genomics, columns, source)
        written["associations"] = out / "associations.csv"
        write_csv(written["associations"], ASSOCIATION_COLUMNS, assoc)
        labels = {c: cluster_labels(rows[masks], genomics, c) for c in columns}
        plotted = [f for f in NUMERIC_FEATURES if np.isfinite(column(rows[masks], f)).any()]
        written["boxplots"] = out / "boxplots.png"
        render.boxplots(rows[masks], labels, plotted, written["boxplots"])
        for feature in PAPER_FEATURES if per_feature_plots else ():
            written[f"boxplot_{feature}"] = out / f"boxplot_{feature}.png"
            render.boxplots(rows[masks], labels, [feature], written[f"boxplot_{feature}"])
    comparison = _compare(rows, genomics, out, written) if secondary is not None else None
    info = {
        "data_dir": data_dir,
        "masks": masks,
        "mask_detail": detail,
        "notes": notes,
        "spacing": spacing or "unknown (voxel units)",
        "seconds": time.perf_counter() - start,
    }
    written["report"] = out / "report.md"
    render.write_text(written["report"], render.report_markdown(info, rows[masks], assoc, sources, comparison))
    seconds = time.perf_counter() - start
    log(f"wrote {len(written) + (1 if save_masks else 0)} outputs to {out} in {seconds:.1f} s")
    return {
        "n_patients": len(rows[masks]),
        "files": written,
        "seconds": seconds,
        "associations": assoc,
        "comparison": comparison,
        "origins": origins,
    }


def _compare(
    rows: dict[str, list[dict[str, object]]], genomics: dict[str, dict[str, str]], out: Path, written: dict[str, Path]
) -> dict[str, Any]:
    """Automatic-vs-manual agreement (``agreement.csv``, ``bland_altman.png``) and RNASeq AUCs (``auc.csv``)."""
    manual = {str(r["patient"]): r for r in rows["truth"]}
    auto = {str(r["patient"]): r for r in rows["predicted"]}
    both = sorted(set(manual) & set(auto))
    m_rows, a_rows = [manual[p] for p in both], [auto[p] for p in both]
    features = ("volume_voxels",) + PAPER_FEATURES
    agreement = {f: stats.agreement(column(a_rows, f), column(m_rows, f)) for f in features}
    written["agreement"] = out / "agreement.csv"
    fields = ["feature", *stats.Agreement.__dataclass_fields__]
    write_csv(written["agreement"], fields, [{"feature": f, **vars(a)} for f, a in agreement.items()])
    written["bland_altman"] = out / "bland_altman.png"
    render.bland_altman({f: (column(a_rows, f), column(m_rows, f)) for f in features}, written["bland_altman"])
    auc_rows: list[list[object]] = []
    if genomics:
        labels = cluster_labels(m_rows, genomics, "RNASeqCluster")
        for f in PAPER_FEATURES:
            manual_auc = stats.one_vs_rest_auc(column(m_rows, f), labels)
            auto_auc = stats.one_vs_rest_auc(column(a_rows, f), labels)
            auc_rows += [[f, f"{c} vs rest", manual_auc[c], auto_auc.get(c, math.nan)] for c in manual_auc]
        written["auc"] = out / "auc.csv"
        auc_columns = ["feature", "cluster", "auc_manual", "auc_automatic"]
        write_csv(written["auc"], auc_columns, [dict(zip(auc_columns, r)) for r in auc_rows])
    return {"n": len(both), "agreement": agreement, "auc_rows": auc_rows}
