"""lggseg.infer.backends: the ONNX Runtime backend gives the torch masks; cache; lazy import; CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lggseg.commands.cli import main
from lggseg.data.dataset import index_dataset, load_volume
from lggseg.infer import postprocess
from lggseg.infer.backends import TorchBackend
from lggseg.infer.segmenter import Segmenter
from lggseg.model.bundle import ModelBundle, load_weights, shipped_weights_path

pytest.importorskip("onnxruntime")
from lggseg.infer.backends import OnnxBackend, cache_path  # noqa: E402


@pytest.fixture(scope="module")
def weights_copy(tmp_path_factory: pytest.TempPathFactory, shipped_onnx: Path) -> Path:
    """The shipped weights in a private folder, with the session's export as their ONNX cache."""
    target = tmp_path_factory.mktemp("weights") / "model.safetensors"
    shutil.copy2(shipped_weights_path(), target)
    cached = cache_path(load_weights(target))
    assert cached is not None
    shutil.copy2(shipped_onnx, cached)  # the same graph OnnxBackend would export: no second export
    return target


@pytest.fixture(scope="module")
def bundle(weights_copy: Path) -> ModelBundle:
    return load_weights(weights_copy)


@pytest.fixture(scope="module")
def onnx_backend(bundle: ModelBundle) -> OnnxBackend:
    return OnnxBackend(bundle)  # exports once and caches next to weights_copy


def test_export_is_cached_next_to_the_weights_and_reused(
    bundle: ModelBundle, onnx_backend: OnnxBackend, weights_copy: Path
) -> None:
    cached = cache_path(bundle)
    assert cached is not None and cached.parent == weights_copy.parent and cached.exists()
    assert bundle.sha256[:12] in cached.name
    stamp = cached.stat().st_mtime_ns
    OnnxBackend(bundle)  # second start: read from the cache, not exported again
    assert cached.stat().st_mtime_ns == stamp
    assert [p.name for p in weights_copy.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_damaged_or_foreign_cache_is_not_trusted(
    bundle: ModelBundle, onnx_backend: OnnxBackend, tmp_path: Path
) -> None:
    from dataclasses import replace

    from lggseg.infer.backends import _cached_model_matches

    cached = cache_path(bundle)
    assert _cached_model_matches(cached, bundle)
    assert not _cached_model_matches(cached, replace(bundle, sha256="0" * 64))  # other weights
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"garbage")
    assert not _cached_model_matches(garbage, bundle)  # onnx_model_for re-exports in both cases


def test_same_masks_as_torch_on_sample_patients(
    sample_dir: Path, bundle: ModelBundle, onnx_backend: OnnxBackend
) -> None:
    """fp32 torch and ONNX Runtime: probabilities within 1e-4 and identical masks.

    The default torch path on a CPU with bf16 instructions runs in bf16 autocast; its masks may
    differ from fp32 in a few boundary voxels where the probability is within bf16 rounding
    (~1e-2) of the threshold, so that comparison allows 0.5% of the predicted tumor voxels.
    """
    torch_fp32 = Segmenter(bundle, TorchBackend(bundle, bf16="off"))
    torch_default = Segmenter(bundle, TorchBackend(bundle))
    onnx = Segmenter(bundle, onnx_backend)
    for patient in index_dataset(sample_dir).patients:
        images = load_volume(patient).images
        prob_onnx, prob_fp32 = onnx.probabilities(images), torch_fp32.probabilities(images)
        mask_onnx, mask_fp32 = postprocess.apply(prob_onnx, bundle.post), postprocess.apply(prob_fp32, bundle.post)
        assert float(np.abs(prob_onnx - prob_fp32).max()) <= 1e-4
        assert np.array_equal(mask_onnx, mask_fp32), (
            f"{patient.name}: {int((mask_onnx != mask_fp32).sum())} voxels differ"
        )
        if torch_default.backend.bf16:
            mask_default = torch_default.segment(images)
            differing = int((mask_default != mask_onnx).sum())
            assert differing <= max(10, 0.005 * mask_onnx.sum()), (
                f"{patient.name}: {differing} voxels differ (bf16 vs fp32)"
            )


def test_odd_sizes_are_padded_like_the_torch_model(bundle: ModelBundle, onnx_backend: OnnxBackend) -> None:
    channels = bundle.config.in_channels  # 9 for the shipped 2.5D model
    x = np.random.default_rng(0).standard_normal((2, channels, 250, 241)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.sigmoid(bundle.model(torch.from_numpy(x))).numpy()
    got = onnx_backend(x)
    assert got.shape == (2, 1, 250, 241)
    assert float(np.abs(got - expected).max()) <= 1e-4


def test_predict_with_onnx_runtime_end_to_end(
    sample_patient: Path, weights_copy: Path, onnx_backend: OnnxBackend, tmp_path: Path
) -> None:
    slice_file = sorted(sample_patient.glob("*_10.tif"))[0]
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(slice_file), "--out", str(tmp_path), "--weights", str(weights_copy), "--runtime", "onnx"])
    assert exc.value.code == 0
    assert (tmp_path / "slices" / "masks" / f"{slice_file.stem}_mask.png").exists()
    assert (tmp_path / "summary.csv").exists()


def test_unknown_runtime_exits_2(sample_patient: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slice_file = sorted(sample_patient.glob("*_10.tif"))[0]
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(slice_file), "--out", str(tmp_path), "--runtime", "tensorrt"])
    assert exc.value.code == 2
    assert "unknown runtime" in capsys.readouterr().err


def test_import_lggseg_does_not_load_onnxruntime() -> None:
    code = (
        "import sys, lggseg, lggseg.commands.cli, lggseg.infer.segmenter, lggseg.infer.backends; assert "
        "'onnxruntime' not in sys.modules and 'onnx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
