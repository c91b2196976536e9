"""Side-by-side CPU inference benchmark (issue 4): the reference U-Net vs our torch and ONNX paths.

In one run, on the same real slices (the bundled 20-slice sample patient), each case runs in its
own subprocess (so peak RSS is per case and malloc tuning, which is process-wide, cannot leak):

* ``reference``: the reference model of docs/protocol.md, the classic U-Net with f=32 (7.76 M parameters,
  random init), run the way peers run it: eager PyTorch, fp32, NCHW, default glibc allocator
  (no mallopt, GLIBC_TUNABLES removed), batches of 16 for a volume, no TTA;
* ``torch``: our shipped model through ``Segmenter.from_weights(config=InferenceConfig(runtime="torch"))``;
* ``onnx``: our shipped model through ``Segmenter.from_weights(config=InferenceConfig(runtime="onnx"))``;
* with ``--with-accurate``, ``accurate``: the packaged 4-network ensemble (``lggseg predict --accurate``);
  its batch-1 time is one slice through all four networks, each with its own input;
* with ``--plan WxN`` (repeatable), ``plan``: what an ensemble of N networks of width W *would*
  cost before any is trained: N random-init U-Nets of the shipped architecture with ``base_width``
  W, through ``Segmenter.of_members`` and the default torch path (speed only, no Dice).

For each: ms/slice at batch 1 (one network call on one slice, median), whole-volume throughput
(``Segmenter.probabilities`` on the patient: normalisation + the shipped TTA + network, in
slices/s; also without TTA), peak RSS of the process, and speed ratios against the reference.
Then the end-to-end wall time of ``lggseg predict`` on the 20-slice patient folder as a whole
process, and levers (fp32 vs bf16, 1 vs all threads, batch size, ONNX Runtime int8 static QDQ
quantisation calibrated on *training* patients of the model's fold) with their mean per-patient
Dice and how many mask voxels change.

    python benchmarks/inference.py                  # full run (minutes)
    python benchmarks/inference.py --quick          # smoke run
    python benchmarks/inference.py --json out.json  # also write every number as JSON
    python benchmarks/inference.py --no-levers --no-predict --with-accurate --json out.json  # + accurate mode
    python benchmarks/inference.py --no-levers --no-predict --plan 8x2 --plan 12x2 --json out.json  # ensembles to be

``--data`` (default ``../shared/data/lgg/kaggle_3m`` beside the repository) is the full LGG data
set: the patients the weights never saw (their fold's test patients; for a final model, the patients
it held out) are used for Dice, and patients it trained on for int8 calibration.
Without it, Dice uses the bundled sample (fold-0 *test* patients) and the int8 lever is skipped,
since calibrating on test patients would leak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"


# --------------------------------------------------------------------------------------------
# worker side: one case per process
# --------------------------------------------------------------------------------------------


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class ReferenceBackend:
    """How peers run a U-Net: eager fp32, NCHW, no_grad, default allocator and threads.

    ``(B, 3, H, W)`` float32 -> ``(B, 1, H, W)`` probabilities.
    """

    def __init__(self, net: Any) -> None:
        self.net = net

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.net(torch.from_numpy(batch))).numpy()


def network_input(images: np.ndarray, config: Any) -> np.ndarray:
    """A volume's normalised network input as the Segmenter builds it for a model of ``config``
    (its ``UNetConfig``): ``(Z, H, W, 3)`` uint8 -> ``(Z, 3 (2c + 1), H, W)`` float32 (a 2.5D model
    sees each slice with its c context neighbours), twice the channels for a mirror model."""
    from lggseg.infer.preprocess import volume_batches

    ((_, x),) = volume_batches(images, config.context_slices, len(images), mirror=config.mirror)
    return np.ascontiguousarray(x.numpy())


def build_segmenter(spec: dict[str, Any]) -> Any:
    """The Segmenter of a case (see :func:`cases`)."""
    from lggseg.infer.backends import TorchBackend
    from lggseg.infer.segmenter import InferenceConfig, Segmenter
    from lggseg.model.bundle import ModelBundle, PostProcess, load_weights

    if spec["runtime"] == "reference":
        import torch

        from lggseg.model.unet import UNet, UNetConfig

        torch.manual_seed(0)
        net = UNet(UNetConfig(base_width=32, depth=4)).eval()
        bundle = ModelBundle(net, PostProcess(), "none", {}, "random-init")
        return Segmenter(bundle, ReferenceBackend(net), InferenceConfig(batch_size=spec["batch_size"]))
    batch = InferenceConfig(batch_size=spec.get("batch_size") or 8)
    if spec["runtime"] == "plan":
        return planned_ensemble(load_weights(spec["weights"]), spec["width"], spec["networks"], batch)
    if spec.get("default"):  # literally the path `lggseg predict --runtime X [--accurate]` takes
        return Segmenter.from_weights(
            spec["weights"], InferenceConfig(runtime=spec["runtime"], batch_size=batch.batch_size)
        )
    bundle = load_weights(spec["weights"])
    if spec["runtime"] == "torch":
        backend: Any = TorchBackend(bundle, bf16=spec.get("bf16", "auto"), threads=spec.get("threads"))
    else:
        from lggseg.infer.backends import OnnxBackend

        backend = OnnxBackend(bundle, threads=spec.get("threads"), model=spec.get("onnx_model"))
    return Segmenter(bundle, backend, batch)


def planned_ensemble(shipped: Any, width: int, networks: int, config: Any) -> Any:
    """``networks`` random-init U-Nets like ``shipped``'s but ``width`` wide, as one ensemble Segmenter."""
    import torch

    from lggseg.infer.segmenter import Segmenter
    from lggseg.model.bundle import ModelBundle
    from lggseg.model.unet import UNet

    members = []
    for seed in range(networks):
        torch.manual_seed(seed)
        net = UNet(dataclasses.replace(shipped.config, base_width=width)).eval()
        members.append(ModelBundle(net, shipped.post, "none", {}, f"random-init-{seed}"))
    return Segmenter.of_members(members[0], members, config)


def describe_backend(segmenter: Any) -> dict[str, Any]:
    import torch

    backend = segmenter.backend
    info: dict[str, Any] = {
        "backend": type(backend).__name__,
        "batch_size": segmenter.config.batch_size,
        "tta": segmenter.bundle.tta,
    }
    if hasattr(backend, "bf16"):
        info["bf16"] = bool(backend.bf16)
    if hasattr(backend, "session"):
        info["threads"] = backend.session.get_session_options().intra_op_num_threads
    else:
        info["threads"] = torch.get_num_threads()
    return info


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one case; returns a JSON-able dict."""

    from lggseg.data.dataset import index_dataset, load_volume

    began = time.perf_counter()
    segmenter = build_segmenter(spec)
    build_seconds = time.perf_counter() - began
    if spec.get("only_build"):
        return {"name": spec["name"], "build_seconds": build_seconds, "peak_rss_mb": peak_rss_mb()}
    volume = load_volume(index_dataset(spec["volume"]).patients[0])
    images = volume.images
    if spec.get("tile"):  # memory check: the volume repeated to `tile` x its slices, run once
        big = np.concatenate([images] * spec["tile"])
        ready = current_rss_mb()
        t0 = time.perf_counter()
        segmenter.probabilities(big)
        return {
            "name": spec["name"],
            "slices": len(big),
            "seconds": time.perf_counter() - t0,
            "rss_ready_mb": ready,
            "peak_rss_mb": peak_rss_mb(),
            "growth_mb": peak_rss_mb() - ready,
        }
    # each network's own input (an ensemble's members may take different ones); batch 1 runs them all
    inputs = [(network_input(images, bundle.config), net) for bundle, net in segmenter.members]
    result: dict[str, Any] = {
        "name": spec["name"],
        "build_seconds": build_seconds,
        "rss_ready_mb": current_rss_mb(),
        "networks": len(inputs),
        **describe_backend(segmenter),
    }

    def one_slice(i: int) -> None:
        for x, net in inputs:
            net(x[i : i + 1])

    n_single = min(spec["n_single"], len(images))
    picks = np.linspace(0, len(images) - 1, n_single).round().astype(int)
    for i in picks[:2]:  # warm-up: first calls allocate and pick kernels
        one_slice(i)
    times = []
    cpu0 = time.process_time()
    for _ in range(spec["rounds"]):
        for i in picks:
            t0 = time.perf_counter()
            one_slice(i)
            times.append(time.perf_counter() - t0)
    result["ms_per_slice_b1"] = 1000 * statistics.median(times)
    result["ms_per_slice_b1_mean"] = 1000 * statistics.fmean(times)
    result["cpu_ms_per_slice_b1"] = (
        1000 * (time.process_time() - cpu0) / len(times)
    )  # all threads; less skewed by other jobs

    def volume_rate(seg: Any) -> tuple[float, float]:
        """(slices/s wall, CPU ms per slice) of whole-volume inference, median over reps."""
        seg.probabilities(images)  # warm-up at this batch shape
        walls, cpus = [], []
        for _ in range(spec["reps"]):
            t0, c0 = time.perf_counter(), time.process_time()
            seg.probabilities(images)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return len(images) / statistics.median(walls), 1000 * statistics.median(cpus) / len(images)

    result["n_volume_slices"] = len(images)
    result["volume_slices_per_s"], result["volume_cpu_ms_per_slice"] = volume_rate(segmenter)
    if segmenter.bundle.tta != "none":
        plain = type(segmenter)(dataclasses.replace(segmenter.bundle, tta="none"), segmenter.backend, segmenter.config)
        result["volume_slices_per_s_no_tta"], result["volume_cpu_ms_per_slice_no_tta"] = volume_rate(plain)
    else:
        result["volume_slices_per_s_no_tta"], result["volume_cpu_ms_per_slice_no_tta"] = (
            result["volume_slices_per_s"],
            result["volume_cpu_ms_per_slice"],
        )

    result["peak_rss_mb"] = peak_rss_mb()  # model + the volume runs (before the Dice patients are loaded)
    if spec.get("eval") and spec["runtime"] != "reference":
        from lggseg.evaluation import metrics

        dices, masks = {}, {}
        for folder in spec["eval"]:
            patient = index_dataset(folder).patients[0]
            vol = load_volume(patient)
            mask = segmenter.segment(vol.images)
            dices[patient.name] = metrics.dice(mask, vol.masks)
            masks[patient.name] = np.packbits(mask)
        np.savez_compressed(spec["masks_out"], **masks)
        result["dice_per_patient"] = dices
        result["mean_dice"] = float(np.mean(list(dices.values())))
        result["peak_rss_after_dice_mb"] = peak_rss_mb()
    return result


def quantize_int8(spec: dict[str, Any]) -> dict[str, Any]:
    """Build an int8 static-QDQ ONNX model calibrated on the given (training) patients' slices."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lggseg.data.dataset import index_dataset, load_volume
    from lggseg.model.bundle import load_weights
    from lggseg.model.onnx_export import build_onnx

    began = time.perf_counter()
    bundle = load_weights(spec["weights"])
    slices = []
    for folder in spec["calibration"]:
        images = load_volume(index_dataset(folder).patients[0], with_masks=False).images
        x = network_input(images, bundle.config)
        picks = np.linspace(0, len(x) - 1, spec["slices_per_patient"]).round().astype(int)  # spread along z
        slices.append(x[picks])
    calib = np.ascontiguousarray(np.concatenate(slices))
    batches = [calib[i : i + 8] for i in range(0, len(calib), 8)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {"image": batch}

    work = Path(spec["out"]).resolve().parent
    fp32, pre = work / "fp32.onnx", work / "fp32_pre.onnx"
    onnx.save_model(build_onnx(bundle), str(fp32))
    # ONNX Runtime's quantisation tools write scratch files (sym_shape_infer_temp.onnx and a
    # <uuid>.data external-data file) into the current folder; run them inside a temporary one
    scratch = tempfile.mkdtemp(prefix="lggseg-quant-")
    os.chdir(scratch)  # this runs in its own subprocess (--quantize), so the chdir stays local
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # symbolic inference cannot follow the dynamic H/W
    # ranges are merged every k batches to bound memory; ORT fails when the last group is empty
    k = next(k for k in range(3, 64) if len(batches) % k)
    quantize_static(
        str(pre),
        str(work / Path(spec["out"]).name),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibMaxIntermediateOutputs": k},
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "name": "quantize",
        "seconds": time.perf_counter() - began,
        "calibration_slices": len(calib),
        "calibration_patients": [Path(f).name for f in spec["calibration"]],
    }


# --------------------------------------------------------------------------------------------
# orchestrator
# --------------------------------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    """Environment of a worker: never a malloc tunable (the reference runs the default allocator;
    ours tunes malloc itself, in process, as `lggseg` does)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH", "")]))
    return env


def run_worker(spec: dict[str, Any], log: Any) -> dict[str, Any] | None:
    """Run one spec in a fresh Python; its last stdout line is the JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=worker_env())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        log(f"  {spec['name']}: FAILED (exit {proc.returncode}): {' | '.join(tail)}")
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - began
    return result


def lggseg_command() -> list[str]:
    script = Path(sys.executable).with_name("lggseg")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lggseg"]


def time_process(command: list[str], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of a whole process (start to exit); raises when it fails."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=worker_env())
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return statistics.median(times), times


def pick_patients(args: argparse.Namespace, info: dict[str, Any]) -> tuple[list[str], list[str], str]:
    """(eval patients, calibration patients, description). Eval patients are the ones the weights
    never saw (their fold's test patients; for a final model, its held-out patients); calibration
    patients are patients they trained on only. The bundled sample holds fold-0 test patients."""
    from lggseg.data.bundled import sample_root
    from lggseg.data.dataset import index_dataset
    from lggseg.data.splits import fold_of
    from lggseg.infer.provenance import patients_seen, seen_in_training

    fold = int(info.get("fold", 0) or 0)
    sample = [str(p.folder) for p in index_dataset(sample_root()).patients]
    data = Path(args.data)
    if not data.is_dir():
        return (sample[:1] if args.quick else sample), [], "bundled sample (no full data: int8 lever skipped)"
    named = index_dataset(data).by_name()
    seen = set(patients_seen(info) or [])
    train = [str(named[n].folder) for n in sorted(named) if n in seen]
    unseen = [n for n in sorted(named) if seen_in_training(info, n) is False]
    test = [str(named[n].folder) for n in unseen if fold < 0 or fold_of(n) == fold]
    n_cal = 2 if args.quick else args.calib_patients
    calibration = [train[i] for i in np.linspace(0, len(train) - 1, n_cal).round().astype(int)]
    which = f"fold-{fold}" if fold >= 0 else "held-out"
    if args.quick:
        return (
            sample[:1],
            calibration,
            f"bundled sample patient (quick); int8 calibrated on {n_cal} training patients of the model",
        )
    if args.dice_patients:
        test = test[: args.dice_patients]
    return (
        test,
        calibration,
        f"{len(test)} {which} test patients of {data}; int8 calibrated on {n_cal} training patients of the model",
    )


def cases(
    args: argparse.Namespace, weights: str, volume: str, eval_patients: list[str], int8: str | None, masks_dir: Path
) -> list[dict[str, Any]]:
    quick = args.quick
    common = {
        "weights": weights,
        "volume": volume,
        "n_single": 5 if quick else 20,
        "rounds": 1 if quick else 2,
        "reps": 1 if quick else 3,
    }

    def case(name: str, dice: bool = True, **kw: Any) -> dict[str, Any]:
        """``dice=False`` for levers that cannot change the numbers (threads, batch size)."""
        spec = {
            **common,
            "name": name,
            "masks_out": str(masks_dir / (re.sub(r"[^a-z0-9]+", "_", name.lower()) + ".npz")),
            **kw,
        }
        if spec["runtime"] != "reference" and dice:
            spec["eval"] = eval_patients
        return spec

    main = [
        case("reference f=32 eager fp32 NCHW", runtime="reference", batch_size=16),
        case("ours torch (default)", runtime="torch", default=True),
        case("ours onnx (default)", runtime="onnx", default=True),
    ]
    if args.accurate:  # the packaged 4-network ensemble, the path `lggseg predict --accurate` takes
        main.append(case("ours torch --accurate (4 networks)", runtime="torch", default=True, weights=args.accurate))
    for width, networks in args.plan:  # N random-init networks of width W, timed as one ensemble
        main.append(
            case(
                f"plan: {networks} x f={width} (random init)",
                dice=False,
                runtime="plan",
                width=width,
                networks=networks,
            )
        )
    if args.no_levers:
        return main
    levers = [
        case("ours torch fp32 (bf16 off)", runtime="torch", bf16="off"),
        case("ours torch 1 thread", dice=False, runtime="torch", threads=1),
        case("ours torch batch 16", dice=False, runtime="torch", batch_size=16),
        case("ours onnx 1 thread", dice=False, runtime="onnx", threads=1),
        case("ours onnx batch 16", dice=False, runtime="onnx", batch_size=16),
    ]
    if int8:
        levers.append(case("ours onnx int8 QDQ", runtime="onnx", onnx_model=int8))
    if quick:  # the smoke run keeps one lever of each kind
        levers = [c for c in levers if "bf16 off" in c["name"] or "int8" in c["name"] or "onnx 1 thread" in c["name"]]
    return main + levers


def mask_differences(results: list[dict[str, Any]], baseline: str) -> None:
    """Add ``voxels_differing``: mask voxels that differ from the baseline case, over eval patients."""
    base = next((r for r in results if r["name"] == baseline and "masks_file" in r), None)
    if base is None:
        return
    ref = np.load(base["masks_file"])
    for r in results:
        if "masks_file" in r:
            other = np.load(r["masks_file"])
            r["voxels_differing_vs_torch_default"] = int(sum(np.unpackbits(ref[k] ^ other[k]).sum() for k in ref.files))
            r["voxels_total"] = int(sum(len(ref[k]) * 8 for k in ref.files))


def print_table(results: list[dict[str, Any]], log: Any) -> None:
    ref = results[0] if results and results[0]["name"].startswith("reference") else None
    header = (
        f"{'case':34} {'ms/slice b1':>11} {'x ref':>6} {'vol sl/s':>9} {'x ref':>6} {'no-TTA sl/s':>11} "
        f"{'x ref':>6} {'peak RSS MB':>11} {'threads':>7} {'bf16':>5} {'batch':>5} {'Dice':>6} {'vox diff':>8}"
    )
    log(header)
    log("-" * len(header))
    for r in results:
        b1_ratio = f"{ref['ms_per_slice_b1'] / r['ms_per_slice_b1']:.1f}" if ref else "-"
        vol_ratio = f"{r['volume_slices_per_s'] / ref['volume_slices_per_s']:.1f}" if ref else "-"
        plain_ratio = f"{r['volume_slices_per_s_no_tta'] / ref['volume_slices_per_s']:.1f}" if ref else "-"
        dice = f"{r['mean_dice']:.4f}" if "mean_dice" in r else "-"
        diff = str(r.get("voxels_differing_vs_torch_default", "-"))
        log(
            f"{r['name'][:34]:34} {r['ms_per_slice_b1']:11.1f} {b1_ratio:>6} {r['volume_slices_per_s']:9.2f} "
            f"{vol_ratio:>6} "
            f"{r['volume_slices_per_s_no_tta']:11.2f} {plain_ratio:>6} {r['peak_rss_mb']:11.0f} {r['threads']:>7} "
            f"{str(r.get('bf16', '-')):>5} {r['batch_size']:>5} {dice:>6} {diff:>8}"
        )


def plan_spec(text: str) -> tuple[int, int]:
    """A ``--plan`` value ``WxN`` -> ``(W, N)``: a width W >= 4 and N >= 1 networks."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or int(match.group(1)) < 4 or int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxNETWORKS such as 8x2, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer slices, repeats and levers")
    parser.add_argument("--weights", default=None, help="weights to benchmark (default: the shipped model)")
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="full LGG data (held-out patients for Dice, training patients for int8 calibration)",
    )
    parser.add_argument("--dice-patients", type=int, default=0, help="limit Dice to this many test patients (0: all)")
    parser.add_argument(
        "--calib-patients", type=int, default=8, help="training patients for int8 calibration (8 slices each)"
    )
    parser.add_argument("--no-levers", action="store_true", help="only the headline cases")
    parser.add_argument(
        "--with-accurate",
        action="store_true",
        help="also time the packaged accurate ensemble (--accurate; with the shipped model only: its Dice "
        "patients are ones every member held out)",
    )
    parser.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="WxN",
        type=plan_spec,
        help="also time N random-init networks of width W as one ensemble (speed only; repeatable, e.g. 8x2)",
    )
    parser.add_argument("--no-predict", action="store_true", help="skip the end-to-end `lggseg predict` timing")
    parser.add_argument("--json", default=None, help="write all results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quantize", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return 0
    if args.quantize:
        print(json.dumps(quantize_int8(json.loads(args.quantize))))
        return 0

    sys.path.insert(0, str(REPO / "src"))
    from lggseg.infer.ensemble import accurate_path

    if args.with_accurate and args.weights is not None:
        print("error: --with-accurate times the shipped model's accurate mode; leave out --weights", file=sys.stderr)
        return 2
    args.accurate = str(accurate_path()) if args.with_accurate else None
    from lggseg.data.bundled import sample_root
    from lggseg.data.dataset import index_dataset
    from lggseg.model.bundle import load_weights, resolve_weights

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.perf_counter()
    source, _ = resolve_weights(args.weights)
    bundle = load_weights(args.weights)
    patients = index_dataset(sample_root()).patients
    volume = (
        next(p for p in patients if len(p.slices) == 20) if any(len(p.slices) == 20 for p in patients) else patients[0]
    )
    eval_patients, calibration, selection = pick_patients(args, bundle.info)
    log(
        f"lggseg inference benchmark ({'quick' if args.quick else 'full'}); python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    log(f"weights: {source} (sha256 {bundle.sha256[:12]}, {bundle.config}, tta={bundle.tta})")
    log(f"volume: {volume.name} ({len(volume.slices)} slices); Dice on: {selection}")

    report: dict[str, Any] = {
        "quick": args.quick,
        "weights": str(source),
        "weights_sha256": bundle.sha256,
        "volume": volume.name,
        "selection": selection,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="lggseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # a private copy of the weights, so the ONNX cache (written next to the weights) is cold
        # once, measured, and never written into the installed package
        weights = tmp / "weights" / source.name
        weights.parent.mkdir()
        shutil.copy2(source, weights)
        int8 = None
        if calibration and not args.no_levers:
            log(f"quantising to int8 (static QDQ, calibrated on {len(calibration)} training patients) ...")
            spec = {
                "weights": str(weights),
                "calibration": calibration,
                "slices_per_patient": 8,
                "out": str(tmp / "int8" / "model_int8.onnx"),
            }
            (tmp / "int8").mkdir()
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--quantize", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=worker_env(),
            )
            if proc.returncode == 0:
                report["quantize"] = json.loads(proc.stdout.strip().splitlines()[-1])
                int8 = spec["out"]
                log(f"  done in {report['quantize']['seconds']:.0f} s")
            else:
                log(f"  int8 quantisation FAILED: {' | '.join(proc.stderr.strip().splitlines()[-3:])}")
        log("exporting the ONNX model (cold cache next to the weights copy) ...")
        prep = run_worker({"name": "onnx export", "runtime": "onnx", "weights": str(weights), "only_build": True}, log)
        if prep is not None:
            report["onnx_cold_start"] = prep
            log(
                f"  ONNX backend cold start (export + session): {prep['build_seconds']:.1f} s, peak RSS "
                f"{prep['peak_rss_mb']:.0f} MB"
            )
        results = []
        for spec in cases(args, str(weights), str(volume.folder), eval_patients, int8, tmp):
            log(f"running {spec['name']} ...")
            result = run_worker(spec, log)
            if result is not None:
                if "dice_per_patient" in result:
                    result["masks_file"] = spec["masks_out"]
                results.append(result)
        mask_differences(results, "ours torch (default)")
        memory = []
        for runtime in ("torch", "onnx"):
            spec = {
                "name": f"ours {runtime} (default)",
                "runtime": runtime,
                "default": True,
                "weights": str(weights),
                "volume": str(volume.folder),
                "tile": 10,
            }
            log(f"running {spec['name']} on a {10 * len(volume.slices)}-slice volume (memory) ...")
            result = run_worker(spec, log)
            if result is not None:
                memory.append(result)
        report["memory"] = memory
        if not args.no_predict:
            repeats = 1 if args.quick else 3
            command = lggseg_command()
            predict: dict[str, Any] = {}
            help_cmd = command + ["--help"]
            predict["lggseg --help"] = time_process(help_cmd, repeats)[0]
            runs = [
                (
                    "torch",
                    command
                    + ["predict", str(volume.folder), "--out", str(tmp / "pred_torch")]
                    + ([] if args.weights is None else ["--weights", str(weights)]),
                )
            ]
            runs.append(
                (
                    "onnx",
                    command
                    + [
                        "predict",
                        str(volume.folder),
                        "--out",
                        str(tmp / "pred_onnx"),
                        "--weights",
                        str(weights),
                        "--runtime",
                        "onnx",
                    ],
                )
            )
            for runtime, cmd in runs:
                try:
                    seconds, _ = time_process(cmd, repeats)
                except RuntimeError as exc:
                    log(f"  predict ({runtime}) FAILED: {exc}")
                    continue
                shown = (
                    " ".join(["lggseg"] + cmd[len(command) :])
                    .replace(str(volume.folder), f"<sample>/{volume.name}")
                    .replace(str(tmp), "<tmp>")
                )
                predict[shown] = seconds
            report["process_seconds"] = predict

    log("")
    log("Per case (each in its own process; 'x ref' = speed-up over the reference in this run):")
    print_table(results, log)
    log("")
    log("CPU time (all threads of the process), less skewed than wall time when other jobs share the machine:")
    log(
        f"{'case':34} {'CPU ms/slice b1':>15} {'x ref':>6} {'CPU ms/slice vol':>16} {'x ref':>6} {'no TTA':>8} "
        f"{'x ref':>6}"
    )
    ref = results[0] if results and results[0]["name"].startswith("reference") else None
    for r in results:
        ratios = [f"{ref[k] / r[k]:.1f}" if ref else "-" for k in ("cpu_ms_per_slice_b1", "volume_cpu_ms_per_slice")]
        plain = f"{ref['volume_cpu_ms_per_slice'] / r['volume_cpu_ms_per_slice_no_tta']:.1f}" if ref else "-"
        log(
            f"{r['name'][:34]:34} {r['cpu_ms_per_slice_b1']:15.1f} {ratios[0]:>6} {r['volume_cpu_ms_per_slice']:16.1f} "
            f"{ratios[1]:>6} {r['volume_cpu_ms_per_slice_no_tta']:8.1f} {plain:>6}"
        )
    log("")
    log("  ms/slice b1: one network call on one slice (no TTA), median.  vol sl/s: Segmenter.probabilities on the")
    log("  whole volume (normalisation + shipped TTA + network); the reference has no TTA.  Dice: mean per-patient,")
    log(
        "  post-processed as shipped.  vox diff: mask voxels differing from 'ours torch (default)' over the Dice "
        "patients."
    )
    for m in report.get("memory", []):
        log(
            f"{m['name']}: {m['slices']}-slice volume in {m['seconds']:.1f} s; peak RSS {m['peak_rss_mb']:.0f} MB, "
            f"{m['growth_mb']:.0f} MB above the loaded model and volume"
        )
    if "onnx_cold_start" in report:
        log(
            f"ONNX backend start: {report['onnx_cold_start']['build_seconds']:.1f} s with a cold cache (export), "
            + ", ".join(f"{r['build_seconds']:.1f} s" for r in results if r["name"] == "ours onnx (default)")
            + " with the cached file"
        )
    if "process_seconds" in report:
        log("Whole-process wall time (median), from start to written files:")
        for command, seconds in report["process_seconds"].items():
            log(f"  {seconds:6.2f} s  {command}")
    report["results"] = results
    report["seconds"] = time.perf_counter() - started
    log(
        f"benchmark took {report['seconds']:.0f} s; load average now {os.getloadavg()[0]:.1f} (numbers are skewed when "
        "other jobs run)"
    )
    if args.json:
        from lggseg.io import atomic

        atomic.write_text(args.json, json.dumps(report, indent=1, default=str))
        log(f"results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
