"""Cross-validation over the canonical 5-fold split, and its out-of-fold report.

Fold ``k``'s model is trained on the other folds' patients (validation drawn from them, as in
``lggseg train --fold k``) and predicts fold ``k``'s test patients with :func:`lggseg.evaluation.evaluate.evaluate`.
Every patient of the data folder that belongs to the canonical split is therefore predicted
exactly once, by the one model that never saw it. The merged report has the same
``metrics.json`` contract and figures as ``lggseg evaluate``.

A CV folder::

    CV/fold_<k>/run/     the run folder of fold k (a plain ``lggseg train`` run folder)
    CV/fold_<k>/test/    evaluate() of that run's best.safetensors on fold k's test patients
    CV/metrics.json      the out-of-fold report: per_patient (with each patient's fold),
    CV/per_patient.csv   headline numbers over all patients, per-fold numbers, the recipe, and
                         the pooled error budget when every fold report holds one;
    CV/dice_per_patient.png, CV/overlays.png   the same figures as ``evaluate``

A fold is *done* when its run finished (see :meth:`lggseg.train.run_folder.RunFolder.finished`) and its test
report was made from the run's current ``best.safetensors``; done folds are skipped, unfinished
runs are resumed. Folds may run as separate jobs (``only_fold``), on other machines or with
torchrun into ``CV/fold_<k>/run``; the report is merged as soon as every fold is there, or with
``merge_only``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from lggseg.data.dataset import index_dataset, load_volume
from lggseg.data.splits import N_FOLDS, canonical_folds, fold_of
from lggseg.errors import LggsegError
from lggseg.evaluation import cohort, error_budget, figures, metrics
from lggseg.evaluation.evaluate import evaluate
from lggseg.evaluation.report import PROTOCOL, OverlayCase, write_report
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import sha256_of
from lggseg.train import distributed
from lggseg.train.config import TrainConfig, config_from_dict
from lggseg.train.run_folder import RunFolder

RECIPE_IGNORED = ("data", "out", "fold", "epochs", "device", "threads", "compile")
"""Config keys that may differ between folds (or between a run and a later ``cv`` call)."""


def fold_dir(out: str | Path, fold: int) -> Path:
    return Path(out) / f"fold_{fold}"


def fold_run(out: str | Path, fold: int) -> RunFolder:
    """The run folder of fold ``fold``: ``out/fold_<fold>/run``."""
    return RunFolder(fold_dir(out, fold) / "run")


def test_patients(data: str | Path, n_folds: int) -> dict[int, list[str]]:
    """The patient folders of ``data`` per canonical fold ``0..n_folds-1`` (folds may be empty)."""
    names = sorted(index_dataset(data).by_name())
    return {k: [n for n in names if fold_of(n) == k] for k in range(n_folds)}


def recipe(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that may differ between folds (:data:`RECIPE_IGNORED`).

    A stored config is completed with today's defaults first, so a key added later with a
    default that keeps the old behaviour does not make an older fold "another recipe".
    """
    values = (cfg if isinstance(cfg, TrainConfig) else config_from_dict(dict(cfg), "recipe")).to_dict()
    return {k: v for k, v in values.items() if k not in RECIPE_IGNORED}


def check_same_recipe(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    """Raise when two recipes differ, naming the first differing keys."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))  # tuples vs lists from YAML/JSON
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        detail = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:3])
        raise LggsegError(
            f"{where}: trained with a different config ({detail}); use another --out or the same --config"
        )


def cross_validate(
    cfg: TrainConfig,
    out: str | Path,
    n_folds: int = N_FOLDS,
    only_fold: int | None = None,
    merge_only: bool = False,
    nproc: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train and evaluate folds ``0..n_folds-1`` (or ``only_fold``), then merge the report.

    ``cfg`` is the recipe; its ``fold`` and ``out`` are set per fold. ``n_folds`` below 5 runs
    only the first folds of the canonical split (the report then says it is partial). Folds
    without any test patient in ``cfg.data`` are skipped. With ``merge_only`` nothing is trained:
    finished runs without a current test report are evaluated, then the report is merged.
    ``nproc > 1`` trains each fold with that many local DDP processes. Returns the merged
    report, or None while folds are still missing.
    """
    if distributed.launched_by_torchrun():
        raise LggsegError(
            "lggseg cv starts its own processes: use `lggseg cv --nproc N`, or run each fold with "
            "`torchrun ... -m lggseg train --fold K --out CV/fold_K/run` and then `lggseg cv --merge-only`"
        )
    if not 1 <= n_folds <= N_FOLDS:
        raise LggsegError(f"--folds must be between 1 and {N_FOLDS}, got {n_folds}")
    if only_fold is not None and not 0 <= only_fold < n_folds:
        raise LggsegError(f"--only-fold must be between 0 and {n_folds - 1}, got {only_fold}")
    out = Path(out)
    patients = test_patients(cfg.data, n_folds)
    for k in [only_fold] if only_fold is not None else range(n_folds):
        if not patients[k]:
            log(f"fold {k}: none of its test patients is in {cfg.data}; skipped")
        elif merge_only:
            evaluate_fold(cfg.data, out, k, log)
        else:
            train_fold(cfg, out, k, nproc, log)
            evaluate_fold(cfg.data, out, k, log)
    missing = [k for k in range(n_folds) if patients[k] and not fold_is_done(out, k)]
    if missing:
        if merge_only:
            raise LggsegError(
                f"{out}: fold(s) {', '.join(map(str, missing))} are not finished; train them (lggseg cv --only-fold K) "
                "before merging"
            )
        log(
            f"out-of-fold report waits for fold(s) {', '.join(map(str, missing))}; run them (--only-fold K), then the "
            "report is merged"
        )
        return None
    return merge_folds(cfg.data, out, n_folds, log)


def train_fold(cfg: TrainConfig, out: Path, fold: int, nproc: int, log: Callable[[str], None]) -> None:
    """Train fold ``fold`` into ``out/fold_<fold>/run``: start it, resume it, or skip it if finished."""
    from lggseg.train.loop import train

    run = fold_run(out, fold)
    fold_cfg = cfg.replace(fold=fold, out=str(run.path))
    resume = run.has_checkpoint()
    if resume:
        check_same_recipe(recipe(run.config()), recipe(fold_cfg), str(run.path))
        if run.finished() and run.config().epochs >= fold_cfg.epochs:
            log(f"fold {fold}: trained already ({run.path})")
            return
        log(f"fold {fold}: resuming {run.path}")
    else:
        log(f"fold {fold}: training {run.path}")
    if nproc > 1:
        distributed.launch(nproc, train, fold_cfg, resume, log)
    else:
        train(fold_cfg, resume=resume, log=log)
    if not run.finished():
        log(f"fold {fold}: stopped before the end; run the same command again to resume")
        raise KeyboardInterrupt


def evaluate_fold(data: str | Path, out: Path, fold: int, log: Callable[[str], None]) -> None:
    """Evaluate fold ``fold``'s finished run on its test patients, unless a current report exists."""
    run = fold_run(out, fold)
    if fold_is_done(out, fold):
        log(f"fold {fold}: test report up to date ({fold_dir(out, fold) / 'test'})")
        return
    if not run.finished():
        log(f"fold {fold}: no finished run in {run.path}; not evaluated")
        return
    log(f"fold {fold}: evaluating its model on the fold's test patients")
    evaluate(data, fold_dir(out, fold) / "test", weights=run.best, fold=fold, log=log)


def fold_is_done(out: Path, fold: int) -> bool:
    """True when the fold's run finished and its test report was made from its current weights."""
    run, report = fold_run(out, fold), fold_dir(out, fold) / "test" / "metrics.json"
    if not report.exists() or not run.finished():
        return False
    return json.loads(report.read_text()).get("weights_sha256") == sha256_of(run.best)


def merge_folds(data: str | Path, out: str | Path, n_folds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Merge the folds' test reports into the out-of-fold report at ``out`` and return it.

    Checks that every fold used the same recipe and that every patient of ``data`` in folds
    ``0..n_folds-1`` appears exactly once.
    """
    out = Path(out)
    patients = test_patients(data, n_folds)
    rows: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    first_recipe: dict[str, Any] | None = None
    budgets: dict[str, dict[str, int]] | None = {}  # None once a fold report predates the error budget
    for k in range(n_folds):
        if not patients[k]:
            continue
        run = fold_run(out, k)
        report = json.loads((fold_dir(out, k) / "test" / "metrics.json").read_text())
        if report.get("fold") != k:
            raise LggsegError(f"{fold_dir(out, k) / 'test'}: holds a report of fold {report.get('fold')}, not fold {k}")
        config = run.config()
        if first_recipe is None:
            first_recipe = recipe(config)
        check_same_recipe(first_recipe, recipe(config), f"{run.path} (compared with the first fold)")
        rows += [{**row, "fold": k} for row in report["per_patient"]]
        if budgets is not None and "error_budget" in report:
            budgets.update(report["error_budget"]["per_patient"])
        else:
            budgets = None
        folds.append(
            {
                "fold": k,
                "n_patients": report["n_patients"],
                "mean_dice": report["mean_dice"],
                "median_dice": report["median_dice"],
                "min_dice": report["min_dice"],
                "epochs": config.epochs,
                "run": str(run.path.relative_to(out)) if run.path.is_relative_to(out) else str(run.path),
                "weights_sha256": report["weights_sha256"],
                "tta": report["tta"],
                "postprocess": report["postprocess"],
            }
        )
    evaluated = [row["patient"] for row in rows]
    expected = sorted(n for k in range(n_folds) for n in patients[k])
    if sorted(evaluated) != expected or len(set(evaluated)) != len(evaluated):
        extra = sorted(set(evaluated) - set(expected))
        absent = sorted(set(expected) - set(evaluated))
        raise LggsegError(
            f"{out}: the fold reports do not cover the data's patients exactly once (missing {absent[:3]}, unexpected "
            f"{extra[:3]}); re-evaluate the folds"
        )
    all_names = sorted(index_dataset(data).by_name())
    summary = metrics.summarize(rows)
    ci_low, ci_high = cohort.bootstrap_mean_interval([row["dice"] for row in rows])
    for fold_row, group in zip(folds, cohort.group_rows(rows, lambda r: r["fold"], "fold")):
        fold_row["false_positive_rate_empty_slices"] = group["false_positive_rate_empty_slices"]
    institutions = cohort.group_rows(rows, lambda r: cohort.institution(r["patient"]), "institution")
    sizes = cohort.size_rows(rows)
    report = {
        **summary,
        "mean_dice_ci95": [ci_low, ci_high],
        "mean_dice_ci95_method": "percentile bootstrap over patients, 10000 resamples, seed 0",
        "institutions": institutions,
        "tumor_sizes": sizes,
        "protocol": PROTOCOL,
        "selection": "out-of-fold: every patient predicted once, by the model of the canonical fold that held it out",
        "skipped": sum(len(canonical_folds()[k]) for k in range(n_folds)) - len(expected),
        "fold": None,
        "n_folds": n_folds,
        "complete": n_folds == N_FOLDS,
        "patients_not_evaluated": [n for n in all_names if (fold := fold_of(n)) is None or fold >= n_folds],
        "folds": folds,
        "recipe": first_recipe,
        "per_patient": rows,
    }
    if budgets:  # every fold report holds its patients' error budgets
        report["error_budget"] = {**error_budget.summarize(list(budgets.values())), "per_patient": budgets}
    write_report(report, out, overlay_cases(data, out, rows))
    cohort.write_group_csv(folds, out / "per_fold.csv")
    cohort.write_group_csv(institutions, out / "per_institution.csv")
    cohort.write_group_csv(sizes, out / "per_tumor_size.csv")
    figures.dice_by_group(rows, out / "dice_by_group.png")
    log(
        f"out-of-fold report over {report['n_patients']} patients in {len(folds)} fold(s): mean Dice "
        f"{report['mean_dice']:.4f}, "
        f"(95% CI {ci_low:.4f}-{ci_high:.4f}), median {report['median_dice']:.4f}, min {report['min_dice']:.4f}; "
        f"{out / 'metrics.json'}" + ("" if report["complete"] else f" (partial: folds 0-{n_folds - 1} of {N_FOLDS})")
    )
    return report


def overlay_cases(data: str | Path, out: Path, rows: list[dict[str, Any]]) -> list[OverlayCase]:
    """Overlays of the best, median and worst patients, each predicted by its own fold's model.

    Two slices per patient: the one with the largest true tumor, and the one with the most
    wrong pixels. Returns ``(title, image (256, 256, 3), truth (256, 256), prediction)`` cases.
    """
    ranked = sorted(rows, key=lambda r: r["dice"])
    picks = [("best", ranked[-1]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[0])]
    named = index_dataset(data).by_name()
    cases = []
    for label, row in picks:
        volume = load_volume(named[row["patient"]])
        truth = volume.require_masks()
        pred = Segmenter.from_weights(fold_run(out, row["fold"]).best).segment(volume.images)
        largest = int(truth.reshape(len(pred), -1).sum(1).argmax())
        wrong = int((pred != truth).reshape(len(pred), -1).sum(1).argmax())
        for what, z in (("largest tumor", largest), ("most errors", wrong)):
            title = (
                f"{label} patient: {row['patient']} (fold {row['fold']})\nDice {row['dice']:.2f}; {what}: slice "
                f"{volume.numbers[z]}"
            )
            cases.append((title, volume.images[z], truth[z], pred[z]))
    return cases
