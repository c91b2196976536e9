"""The ``lggseg`` command line: thin shells that parse options and call one library function.

User errors (bad path, bad file, bad option) print one ``error: ...`` line on stderr and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from lggseg.commands.shape_cmd import register as register_shape
from lggseg.errors import LggsegError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Segment lower-grade glioma FLAIR abnormality in brain MRI.",
)
data_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True, help="Inspect data folders.")
app.add_typer(data_app, name="data")

RUNTIME = typer.Option("torch", "--runtime", help="inference runtime: torch or onnx (ONNX Runtime, CPU)")
DEVICE = typer.Option("auto", "--device", help="torch device: auto (CUDA when present), cpu, cuda, cuda:1...")
BF16 = typer.Option("auto", "--bf16", help="bf16 autocast (torch): auto (where the hardware has it), on, off")
THREADS = typer.Option(0, "--threads", min=0, help="intra-op CPU threads (0: the runtime's default)")
COMPILE = typer.Option(
    None, "--compile", help="torch.compile the training step: auto (runs of 1,000+ steps), on, off (default: config's)"
)
BATCH_SIZE = typer.Option(8, "--batch-size", min=1, help="slices per network call (memory grows with it)")
ACCURATE = typer.Option(
    False,
    "--accurate",
    help="the packaged 4-network ensemble instead of the default network: more accurate out of fold, "
    "about 4x the network time (MODEL_CARD.md, 'Accurate mode')",
)


def _say(message: str) -> None:
    typer.echo(message)


def _inference(runtime: str, device: str, bf16: str, threads: int, batch_size: int) -> Any:
    """The :class:`~lggseg.infer.segmenter.InferenceConfig` of the inference options."""
    from lggseg.infer.segmenter import InferenceConfig

    return InferenceConfig(runtime=runtime, device=device, bf16=bf16, threads=threads, batch_size=batch_size)


def _weights(weights: Optional[Path], accurate: bool) -> Optional[Path]:
    """The ``--weights`` value to load: the packaged accurate ensemble under ``--accurate``."""
    if not accurate:
        return weights
    if weights is not None:
        raise LggsegError("--accurate and --weights name two different models; give one of them")
    from lggseg.infer.ensemble import MANIFEST, accurate_path

    folder = accurate_path()
    if not (folder / MANIFEST).exists():
        raise LggsegError(f"this installation has no accurate ensemble ({folder / MANIFEST} is missing)")
    return folder


def _print_version(value: bool) -> None:
    if value:
        from lggseg.version import __version__

        typer.echo(f"lggseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="print the version and exit", is_eager=True, callback=_print_version
    ),
) -> None:
    """Segment lower-grade glioma FLAIR abnormality in brain MRI."""


@app.command()
def demo(
    out: Path = typer.Option(Path("lggseg_demo"), "--out", help="output folder"),
    runtime: str = RUNTIME,
    device: str = DEVICE,
    bf16: str = BF16,
    threads: int = THREADS,
    batch_size: int = BATCH_SIZE,
    accurate: bool = ACCURATE,
) -> None:
    """Run the shipped model on the bundled sample patients and write overlays, NIfTI and figures."""
    from lggseg.pipeline.demo import run_demo

    inference = _inference(runtime, device, bf16, threads, batch_size)
    run_demo(out, _weights(None, accurate), inference=inference, log=_say)


@data_app.command("check")
def data_check(folder: Path = typer.Argument(..., help="a kaggle_3m-style folder (or its parent)")) -> None:
    """Validate every file of a data folder and print counts and problems."""
    from lggseg.data.dataset import check_dataset

    report = check_dataset(folder, progress=True)
    _say(f"data folder:        {report.root}")
    _say(f"patients:           {report.n_patients}")
    _say(f"slices:             {report.n_slices}")
    _say(f"slices with tumor:  {report.n_tumor_slices}")
    _say(f"slices without:     {report.n_empty_slices}")
    _say("patients per institution: " + ", ".join(f"{k} {v}" for k, v in report.institutions.items()))
    _say(f"problems:           {len(report.problems)}")
    for problem in report.problems:
        _say(f"  - {problem}")


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="kaggle_3m-style data folder"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML training config"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder to create"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="run folder to continue"),
    fold: Optional[int] = typer.Option(None, "--fold", help="canonical fold held out as test (0-4)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="total number of epochs"),
    nproc: int = typer.Option(
        1, "--nproc", help="train with N local processes (DDP: one per GPU, or gloo on CPU); see docs/distributed.md"
    ),
    compile: Optional[str] = COMPILE,
) -> None:
    """Train a U-Net on the training patients of a fold
    (also under torchrun: `torchrun --nproc_per_node=N -m lggseg train ...`)."""
    from lggseg.train import distributed
    from lggseg.train.config import load_config
    from lggseg.train.loop import train as train_run
    from lggseg.train.run_folder import RunFolder

    if resume is not None:
        if config is not None or fold is not None:
            raise LggsegError("--resume continues a run with its own config; do not pass --config or --fold")
        cfg = (
            RunFolder(resume)
            .config()
            .replace(out=str(resume), data=str(data) if data else None, epochs=epochs, compile=compile)
        )
    else:
        if data is None:
            raise LggsegError("--data is required (a kaggle_3m-style folder)")
        cfg = load_config(config).replace(
            data=str(data), fold=fold, epochs=epochs, out=str(out) if out else None, compile=compile
        )
        if out is None and config is None:
            raise LggsegError("--out is required (the run folder to create)")
        if RunFolder(cfg.out).has_checkpoint():
            raise LggsegError(f"{cfg.out}: already holds a run; use --resume {cfg.out} or another --out")
    if nproc < 1:
        raise LggsegError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1:
        distributed.local_batch_size(cfg.batch_size, distributed.Dist(world_size=nproc))  # fail before starting workers
        distributed.launch(nproc, train_run, cfg, resume is not None, _say)
    else:
        train_run(cfg, resume=resume is not None, log=_say)
    if distributed.dist_from_env().is_main:
        _say(f"run folder: {cfg.out}")


@app.command()
def cv(
    data: Path = typer.Option(..., "--data", help="kaggle_3m-style data folder"),
    out: Path = typer.Option(..., "--out", help="cross-validation folder (fold_K/run, fold_K/test, merged report)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML training config used for every fold"),
    folds: int = typer.Option(5, "--folds", help="run canonical folds 0..N-1 (5 = the full cross-validation)"),
    only_fold: Optional[int] = typer.Option(
        None, "--only-fold", help="train and evaluate this fold only (merge when all are done)"
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="total number of epochs per fold"),
    merge_only: bool = typer.Option(
        False, "--merge-only", help="train nothing: evaluate finished folds and merge the report"
    ),
    nproc: int = typer.Option(1, "--nproc", help="train each fold with N local DDP processes"),
    compile: Optional[str] = COMPILE,
) -> None:
    """Cross-validate on the canonical split and write one out-of-fold report (skips folds already done)."""
    from lggseg.train.config import load_config
    from lggseg.train.cv import cross_validate

    if nproc < 1:
        raise LggsegError(f"--nproc must be >= 1, got {nproc}")
    cfg = load_config(config).replace(data=str(data), epochs=epochs, compile=compile)
    cross_validate(cfg, out, folds, only_fold, merge_only, nproc, log=_say)


@app.command()
def calibrate(
    run: Path = typer.Argument(
        ..., help="a finished run folder (best.safetensors, split.json) or an ensemble folder (ensemble.json)"
    ),
    data: Path = typer.Option(..., "--data", help="kaggle_3m-style data folder holding the run's validation patients"),
) -> None:
    """Choose the post-processing on validation patients: a run's again (after the rule list changed), or an ensemble's.

    The network is untouched; the chosen rule replaces the one in best.safetensors and
    calibration.json. In a cross-validation folder, run `lggseg cv --merge-only` afterwards: it
    re-evaluates every fold whose weights changed. An ensemble folder's rule is chosen for the mean
    of its members on the validation patients its ensemble.json lists, and recorded there.
    """
    from lggseg.train.calibrate import recalibrate

    recalibrate(run, data, log=_say)


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data", help="kaggle_3m-style data folder with masks"),
    out: Path = typer.Option(..., "--out", help="report folder (metrics.json, per_patient.csv, plots)"),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="weights file, run folder, or ensemble / CV folder (default: shipped model)"
    ),
    fold: Optional[int] = typer.Option(None, "--fold", help="evaluate the test patients of this canonical fold"),
    runtime: str = RUNTIME,
    device: str = DEVICE,
    bf16: str = BF16,
    threads: int = THREADS,
    batch_size: int = BATCH_SIZE,
    accurate: bool = ACCURATE,
) -> None:
    """Per-patient evaluation by the protocol of docs/protocol.md."""
    from lggseg.evaluation.evaluate import evaluate as run_evaluate

    inference = _inference(runtime, device, bf16, threads, batch_size)
    run_evaluate(data, out, _weights(weights, accurate), fold, inference, log=_say)


@app.command()
def predict(
    inputs: Optional[List[Path]] = typer.Argument(
        None,
        help="slice images, patient folders, NIfTI volumes, DICOM series folders, or folders of these",
        show_default=False,
    ),
    out: str = typer.Option(..., "--out", help="output folder (created if missing)"),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="weights file, run folder, or ensemble / CV folder (default: shipped model)"
    ),
    flair: Optional[Path] = typer.Option(
        None, "--flair", help="one more case given as separate files: its FLAIR (NIfTI file or DICOM series folder)"
    ),
    pre: Optional[Path] = typer.Option(None, "--pre", help="that case's pre-contrast T1 (same grid as --flair)"),
    post: Optional[Path] = typer.Option(None, "--post", help="that case's post-contrast T1 (same grid as --flair)"),
    spacing: Optional[str] = typer.Option(
        None,
        "--spacing",
        help="voxel size Z,Y,X in mm of slice images and patient folders (e.g. 3,0.94,0.94), for areas in mm2 and "
        "volumes in mL; NIfTI and DICOM inputs use their own",
    ),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="probability threshold replacing the weights' own (recorded in the outputs)"
    ),
    save_probabilities: bool = typer.Option(
        False,
        "--save-probabilities",
        help="also write <case>_probability.nii.gz: float32 probabilities 0..1 on the input's grid",
    ),
    runtime: str = RUNTIME,
    device: str = DEVICE,
    bf16: str = BF16,
    threads: int = THREADS,
    batch_size: int = BATCH_SIZE,
    accurate: bool = ACCURATE,
) -> None:
    """Segment new scans; write masks, overlays, NIfTI (and DICOM SEG) outputs and summary.csv.

    Inputs: a 3-channel slice image or patient folder (pre-contrast, FLAIR, post-contrast as in the
    LGG data set; a grayscale image is FLAIR); a NIfTI volume (3D: FLAIR; 4D with 3 components:
    pre, FLAIR, post), oriented by its affine; a folder holding one DICOM series (FLAIR; needs the
    'dicom' extra). Or separate files of one case: --flair F [--pre P] [--post Q], NIfTI files or
    DICOM folders that must share one voxel grid.

    FLAIR alone: the pre- and post-contrast channels become copies of FLAIR (expect lower accuracy
    than with 3 channels: see MODEL_CARD.md, "Input kinds").

    Outputs per case: masks/ and overlays/ PNGs, <case>_mask.nii.gz on the input's own grid and
    affine, <case>.json, a DICOM SEG for DICOM input; summary.csv grows as cases finish, with
    voxels, and mm2 / mL where the spacing is known. One line per finished case; exit status 2
    when any input failed (the others are still written).
    """
    from lggseg.commands.reporting import make_reporter
    from lggseg.pipeline.inputs import parse_spacing
    from lggseg.pipeline.predict import predict as run_predict

    if not out.strip():
        raise LggsegError("--out must name a folder (got an empty string)")
    if not inputs and flair is None:
        raise LggsegError("no inputs given: pass slice images, folders or NIfTI files, or --flair FILE")
    inference = _inference(runtime, device, bf16, threads, batch_size)
    reporter = make_reporter()
    report = run_predict(
        list(inputs or []),
        Path(out),
        _weights(weights, accurate),
        inference,
        log=lambda message: typer.echo(message, err=True),
        flair=flair,
        pre=pre,
        post=post,
        spacing=parse_spacing(spacing) if spacing is not None else None,
        threshold=threshold,
        save_probabilities=save_probabilities,
        reporter=reporter,
    )
    if report.summary_csv is not None:
        _say(f"outputs in {out}; summary in {report.summary_csv}")
    if report.failures:
        failed = len(report.failures)
        typer.echo(f"error: {failed} input(s) failed, {len(report.cases)} succeeded", err=True)
        raise typer.Exit(2)


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="ONNX file to write (its folder must exist)"),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="weights file, run folder, or ensemble / CV folder (default: shipped model)"
    ),
    export_format: str = typer.Option("onnx", "--format", help="export format (onnx)"),
    accurate: bool = ACCURATE,
) -> None:
    """Export the model (with its sigmoid) to ONNX: dynamic batch and size, metadata inside.

    An ensemble (``--accurate``, or an ensemble / CV folder) exports as one graph that averages its members."""
    if export_format.lower() != "onnx":
        raise LggsegError(f"--format {export_format!r} is not supported; the only export format is onnx")
    from lggseg.infer.ensemble import load_model
    from lggseg.model.onnx_export import check_out_path, export_onnx

    check_out_path(out)  # a bad --out fails before the (ensemble's) networks load
    bundle, members = load_model(_weights(weights, accurate))
    path = export_onnx(bundle, out, members)
    what = f"the mean of {len(members)} networks" if members else "one network"
    _say(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {what}): input 'image' float32 "
        "(batch, channels, H, W) normalised, output 'probability' (batch, 1, H, W)"
    )


@app.command()
def serve(
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="address to listen on (loopback by default; anything else is reachable from other machines)",
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="weights file, run folder, or ensemble / CV folder (default: shipped model)"
    ),
    runtime: str = RUNTIME,
    device: str = DEVICE,
    bf16: str = BF16,
    threads: int = THREADS,
    batch_size: int = BATCH_SIZE,
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", help="largest request body in MB (2^20 bytes)"),
    max_image_side: int = typer.Option(2048, "--max-image-side", min=1, help="largest slice width or height in pixels"),
    workers: int = typer.Option(1, "--workers", min=1, help="requests segmented at the same time"),
    queue: int = typer.Option(16, "--queue", min=0, help="requests allowed to wait; more get 503"),
    token: Optional[str] = typer.Option(
        None, "--token", help="API token that /api/ requests must carry (default: $LGGSEG_API_TOKEN; none if unset)"
    ),
    allowed_host: List[str] = typer.Option(
        [], "--allowed-host", help="extra Host name answered when bound beyond loopback (repeatable; '*': any)"
    ),
    accurate: bool = ACCURATE,
) -> None:
    """Web page and HTTP API (FastAPI + uvicorn): open http://127.0.0.1:8000/ in a browser."""
    from lggseg.serve.app import serve as run_server
    from lggseg.serve.limits import ServerLimits, megabytes_to_bytes

    limits = ServerLimits(
        max_upload_bytes=megabytes_to_bytes(max_upload_mb), max_image_side=max_image_side, workers=workers, queue=queue
    )
    inference = _inference(runtime, device, bf16, threads, batch_size)
    run_server(
        host, port, _weights(weights, accurate), inference, limits, log=_say, token=token, allowed_hosts=allowed_host
    )


register_shape(app)  # lggseg shape (issue 15), kept in its own module


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: map user errors to one line on stderr and exit status 2."""
    try:
        code = app(args=argv, prog_name="lggseg", standalone_mode=False)
    except typer.Exit as exc:  # raised by --help / no_args_is_help in some Typer versions
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument, bad value
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lggseg` or `lggseg data`: show help
            typer.echo(message)
            sys.exit(0)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        sys.exit(2)
    except LggsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
