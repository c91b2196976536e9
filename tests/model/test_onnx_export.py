"""lggseg.model.onnx_export and ``lggseg export``: ONNX Runtime agrees with PyTorch; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lggseg.commands.cli import main
from lggseg.data.dataset import index_dataset, load_volume
from lggseg.infer.preprocess import volume_batches
from lggseg.model.bundle import load_weights, save_weights, shipped_sha256
from lggseg.model.onnx_export import export_onnx
from lggseg.model.unet import UNet, UNetConfig

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``lggseg ARGS`` in process; return (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def exported(shipped_onnx: Path) -> Path:
    """The shipped model exported through the CLI (the session's one export)."""
    return shipped_onnx


@pytest.fixture(scope="module")
def sample_slices(sample_dir: Path) -> np.ndarray:
    """Six real slices of a sample patient, normalised as the shipped model sees them:
    ``(6, 3 (2c + 1), 256, 256)`` float32 (c: its context slices)."""
    volume = load_volume(index_dataset(sample_dir).patients[0])
    ((_, x),) = volume_batches(volume.images, load_weights().config.context_slices, len(volume.images))
    picks = np.linspace(0, len(x) - 1, 6).round().astype(int)
    return np.ascontiguousarray(x[picks].numpy())


def torch_probabilities(x: np.ndarray) -> np.ndarray:
    """The shipped model in eager fp32: ``(B, C, H, W)`` -> ``(B, 1, H, W)`` probabilities."""
    model = load_weights().model.eval()
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(x))).numpy()


def test_onnx_runtime_matches_pytorch_on_real_slices(exported: Path, sample_slices: np.ndarray) -> None:
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    expected = torch_probabilities(sample_slices)
    for batch in (sample_slices[:1], sample_slices):  # dynamic batch: 1 and 6
        got = session.run(["probability"], {"image": batch})[0]
        assert got.shape == (len(batch), 1, 256, 256) and got.dtype == np.float32
        assert float(np.abs(got - expected[: len(batch)]).max()) <= 1e-4
    crop = np.ascontiguousarray(sample_slices[:2, :, 64:192, 32:224])  # dynamic H, W (multiples of 16)
    got = session.run(["probability"], {"image": crop})[0]
    assert got.shape == (2, 1, 128, 192)
    assert float(np.abs(got - torch_probabilities(crop)).max()) <= 1e-4


def test_exported_model_describes_itself(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    bundle = load_weights()
    assert props["weights_sha256"] == shipped_sha256()
    assert json.loads(props["model"]) == bundle.config.to_dict()
    assert json.loads(props["postprocess"]) == bundle.post.to_dict()
    assert props["tta"] == bundle.tta and props["stride"] == "16"
    assert "percentile" in props["preprocessing"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", bundle.config.in_channels, "height", "width"]
    assert model.graph.output[0].name == "probability"


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_export_into_missing_folder_exits_2_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*_args: object) -> None:
        raise AssertionError("the networks were loaded before --out was checked")

    monkeypatch.setattr("lggseg.infer.ensemble.load_model", no_loading)
    target = tmp_path / "missing" / "model.onnx"
    code, _, err = run_cli(["export", "--format", "onnx", "--accurate", "--out", str(target)], capsys)
    assert_one_line_error(code, err, "does not exist")
    assert not target.parent.exists()


def test_export_corrupt_weights_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x00\x01 not a safetensors file" * 10)
    target = tmp_path / "model.onnx"
    code, _, err = run_cli(["export", "--format", "onnx", "--weights", str(weights), "--out", str(target)], capsys)
    assert_one_line_error(code, err, str(weights))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors"]  # nothing written, no temp left


def test_export_weights_of_another_architecture_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "resnet.safetensors"
    save_file({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, str(foreign))
    code, _, err = run_cli(["export", "--weights", str(foreign), "--out", str(tmp_path / "a.onnx")], capsys)
    assert_one_line_error(code, err, str(foreign), "not an lggseg U-Net")

    # an lggseg file whose tensors do not fit the architecture its metadata declares
    mismatched = tmp_path / "mismatched.safetensors"
    save_weights(mismatched, UNet(UNetConfig(base_width=8)))
    tensors = {k: v.contiguous() for k, v in UNet(UNetConfig(base_width=4)).state_dict().items()}
    from safetensors import safe_open

    with safe_open(str(mismatched), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(mismatched), metadata=metadata)
    code, _, err = run_cli(["export", "--weights", str(mismatched), "--out", str(tmp_path / "b.onnx")], capsys)
    assert_one_line_error(code, err, str(mismatched), "shape")
    assert not list(tmp_path.glob("*.onnx"))


def test_export_bad_format_or_folder_target_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["export", "--format", "tflite", "--out", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, err, "tflite")
    code, _, err = run_cli(["export", "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "is a folder")


def test_failed_write_leaves_no_file(tmp_path: Path, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lggseg.model.onnx_export import write_model

    model = onnx.load(str(exported))

    def half_write(proto: object, path: str) -> None:
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx, "save_model", half_write)
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        write_model(model, target)
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_nothing_but_its_file(exported: Path) -> None:
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]
    leftovers = [p.name for p in Path.cwd().iterdir() if p.name == "sym_shape_infer_temp.onnx" or p.suffix == ".data"]
    assert leftovers == []  # ONNX Runtime's scratch files never land in the working folder


def test_an_ensemble_bundle_without_its_members_is_refused(tmp_path: Path) -> None:
    import dataclasses

    from lggseg.errors import LggsegError
    from lggseg.model.onnx_export import build_onnx

    shipped = load_weights(None)
    ensemble = dataclasses.replace(shipped, info={"ensemble": [{"sha256": "a"}, {"sha256": "b"}]}, path=tmp_path)
    with pytest.raises(LggsegError, match="ensemble of 2 models needs its members"):
        build_onnx(ensemble)  # its model is only its first member: never exported as the ensemble


def tiny_member(
    path: Path, context: int, seed: int, tta: str = "none", info: dict | None = None, mirror: bool = False
) -> Path:
    """A random 2-level U-Net of width 4, ``context`` slices of context (and the mirror input), saved to ``path``."""
    torch.manual_seed(seed)
    channels = 3 * (2 * context + 1) * (2 if mirror else 1)
    config = UNetConfig(in_channels=channels, base_width=4, depth=2, context_slices=context, mirror=mirror)
    save_weights(path, UNet(config), tta=tta, info=info)
    return path


def test_an_ensemble_exports_as_one_graph_that_predicts_as_predict_does(
    tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Members of contexts 0, 2 and 1 (the last with flip TTA): the graph takes the widest input,
    feeds each member its own slices and gives the ensemble's probabilities of ``lggseg predict``."""
    from lggseg.infer.segmenter import InferenceConfig, Segmenter

    folder = tmp_path / "ens"
    folder.mkdir()
    tiny_member(folder / "a.safetensors", 0, 1)
    tiny_member(folder / "b.safetensors", 2, 2)
    tiny_member(folder / "c.safetensors", 1, 3, tta="flip")
    out = tmp_path / "ens.onnx"
    status, said, _ = run_cli(["export", "--weights", str(folder), "--out", str(out)], capsys)
    assert status == 0 and "the mean of 3 networks" in said

    images = load_volume(index_dataset(sample_dir).patients[0]).images[:6]
    expected = Segmenter.from_weights(folder, InferenceConfig(bf16="off")).probabilities(images)
    ((_, x),) = volume_batches(images, 2, len(images))
    assert x.shape[1] == 15  # 3 channels x 5 slices: the widest member's input
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["probability"], {"image": np.ascontiguousarray(x.numpy())})[0][:, 0]
    assert np.abs(got - expected).max() < 1e-4
    # the mean differs from member c alone: the graph does not just pass one member through
    alone = Segmenter.from_weights(folder / "c.safetensors", InferenceConfig(bf16="off")).probabilities(images)
    assert np.abs(got - alone).max() > 1e-3

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    listed = json.loads(meta["ensemble"])
    assert [m["channels"] for m in listed] == [[6, 9], [0, 15], [3, 12]]
    assert [m["tta"] for m in listed] == ["none", "none", "flip"]
    assert json.loads(meta["model"])["context_slices"] == 2 and meta["stride"] == "4"


def test_an_ensemble_with_a_flair_only_member_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ens"
    folder.mkdir()
    tiny_member(folder / "a.safetensors", 0, 1)
    tiny_member(folder / "b.safetensors", 0, 2, info={"input": "flair_only"})
    out = tmp_path / "ens.onnx"
    status, _, err = run_cli(["export", "--weights", str(folder), "--out", str(out)], capsys)
    assert status == 2 and "trained on FLAIR alone" in err and not out.exists()


def test_a_25d_model_runs_the_same_under_onnx_runtime(tmp_path: Path, sample_dir: Path) -> None:
    """A 9-channel (2.5D) model: the predict path gives the same probabilities on both runtimes."""
    from lggseg.infer.segmenter import InferenceConfig, Segmenter

    torch.manual_seed(0)
    weights = tmp_path / "w25d.safetensors"
    save_weights(weights, UNet(UNetConfig(in_channels=9, base_width=4, depth=2, context_slices=1)))
    volume = load_volume(index_dataset(sample_dir).patients[0])
    torch_prob = Segmenter.from_weights(weights, InferenceConfig(bf16="off")).probabilities(volume.images[:5])
    onnx_prob = Segmenter.from_weights(weights, InferenceConfig(runtime="onnx")).probabilities(volume.images[:5])
    assert np.abs(torch_prob - onnx_prob).max() < 1e-4
    assert load_weights(weights).config.context_slices == 1


def test_a_mirror_model_runs_the_same_under_onnx_runtime(tmp_path: Path, sample_dir: Path) -> None:
    """An 18-channel mirror model: the ONNX graph takes the mirrored input the Segmenter builds."""
    from lggseg.infer.segmenter import InferenceConfig, Segmenter

    weights = tiny_member(tmp_path / "mirror.safetensors", 1, 0, mirror=True)
    images = load_volume(index_dataset(sample_dir).patients[0]).images[:5]
    torch_prob = Segmenter.from_weights(weights, InferenceConfig(bf16="off")).probabilities(images)
    onnx_prob = Segmenter.from_weights(weights, InferenceConfig(runtime="onnx")).probabilities(images)
    assert np.abs(torch_prob - onnx_prob).max() < 1e-4
    out = tmp_path / "mirror.onnx"
    export_onnx(load_weights(weights), out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["model"])["mirror"] is True and "mirrored left-right" in meta["preprocessing"]


def test_an_ensemble_mixing_mirror_and_plain_inputs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ens"
    folder.mkdir()
    tiny_member(folder / "a.safetensors", 1, 1)
    tiny_member(folder / "b.safetensors", 1, 2, mirror=True)
    out = tmp_path / "ens.onnx"
    status, _, err = run_cli(["export", "--weights", str(folder), "--out", str(out)], capsys)
    assert status == 2 and "mirror model" in err and not out.exists()
