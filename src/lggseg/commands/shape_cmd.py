"""``lggseg shape``: tumor shape features and their association with the genomic subtypes.

The command is kept in its own module and added to the main app with :func:`register`. It does
not import :mod:`lggseg.commands.cli` (which imports this module), so it carries its own inference
options and maps :class:`~lggseg.errors.LggsegError` to one ``error: ...`` line and exit status 2
itself; run under ``lggseg``'s ``main`` or under any Typer app, it behaves the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from lggseg.errors import LggsegError

MASKS_HELP = (
    "truth (the data set's masks), predicted (a model's: the out-of-fold models of --cv, else the shipped model "
    "or --weights) or a folder of masks (NIfTI or <patient>_<n>_mask.png)"
)


def parse_spacing(text: Optional[str]) -> Optional[tuple[float, float, float]]:
    """``"Z,Y,X"`` in mm -> ``(z, y, x)``; None stays None. Raises :class:`LggsegError` otherwise."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise LggsegError(f"--spacing must be three positive numbers Z,Y,X in mm (e.g. 2.5,0.9,0.9), got {text!r}")
    return values[0], values[1], values[2]


def fold_run_problem(run_dir: Path) -> Optional[str]:
    """Why a cross-validation fold's ``best.safetensors`` is not final, or None.

    A run folder with a training checkpoint must have finished (all epochs or early stop, and
    calibration when its config asks for it); a bare ``best.safetensors`` (weights copied without
    the run) is taken as final.
    """
    from lggseg.train.run_folder import RunFolder

    run = RunFolder(run_dir)
    if not run.has_checkpoint() or run.finished():
        return None
    state = run.state()
    epochs = state.get("config", {}).get("epochs", "?")
    return f"{run_dir} is still training or was interrupted (epoch {int(state.get('epoch', -1)) + 1} of {epochs})"


def shape(
    data: Path = typer.Option(..., "--data", help="kaggle_3m-style data folder (data.csv beside it for the tests)"),
    masks: str = typer.Option("truth", "--masks", help=MASKS_HELP),
    cv: Optional[Path] = typer.Option(
        None, "--cv", help="cross-validation folder (lggseg cv): each patient is segmented by its own fold's model"
    ),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="with --masks predicted and no --cv: weights file or run folder (default: shipped)"
    ),
    spacing: Optional[str] = typer.Option(
        None, "--spacing", help="voxel size Z,Y,X in mm for every patient (default: unknown, voxel units)"
    ),
    out: Path = typer.Option(Path("lggseg_shape"), "--out", help="output folder"),
    save_masks: bool = typer.Option(
        False, "--save-masks", help="also write the predicted masks as OUT/masks/<patient>_mask.nii.gz"
    ),
    runtime: str = typer.Option("torch", "--runtime", help="inference runtime: torch or onnx (ONNX Runtime, CPU)"),
    device: str = typer.Option("auto", "--device", help="torch device: auto (CUDA when present), cpu, cuda..."),
    bf16: str = typer.Option("auto", "--bf16", help="bf16 autocast (torch): auto, on, off"),
    threads: int = typer.Option(0, "--threads", min=0, help="intra-op CPU threads (0: the runtime's default)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="slices per network call"),
) -> None:
    """Tumor shape features (BEVR, margin fluctuation, angular SD...) and their association with the
    genomic subtypes of data.csv, as in Buda et al. 2019; see docs/radiogenomics.md."""
    try:
        from lggseg.infer.segmenter import InferenceConfig
        from lggseg.shape.report import run_shape_analysis

        if masks not in ("truth", "predicted") and not Path(masks).is_dir():
            raise LggsegError(f"--masks {masks!r}: not truth, predicted or an existing mask folder")
        source: str | Path = masks if masks in ("truth", "predicted") else Path(masks)
        inference = InferenceConfig(runtime=runtime, device=device, bf16=bf16, threads=threads, batch_size=batch_size)
        result = run_shape_analysis(
            data,
            out,
            masks=source,
            spacing=parse_spacing(spacing),
            log=typer.echo,
            cv_dir=cv,
            weights=weights,
            inference=inference,
            save_masks=save_masks,
            check_run=fold_run_problem,
            progress=True,
        )
    except LggsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{result['n_patients']} patients; report: {result['files']['report']}")


def register(app: typer.Typer) -> None:
    """Add the ``shape`` command to ``app`` (the lead's one line in ``cli.py``: ``register(app)``)."""
    app.command("shape")(shape)
