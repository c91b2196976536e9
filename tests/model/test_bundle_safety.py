"""Safe model files: only safetensors load; pickles never run; damaged or foreign files are refused.

Every refusal is an :class:`LggsegError` from the library and, through the CLI, exit status 2
with one ``error:`` line on stderr and no traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

import lggseg
from lggseg.commands.cli import main
from lggseg.errors import LggsegError
from lggseg.model import bundle as weights_module
from lggseg.model.bundle import FORMAT, load_weights, save_weights, sha256_of, shipped_weights_path
from lggseg.model.unet import UNet, UNetConfig

TINY = UNetConfig(base_width=4, depth=2)


class Payload:
    """Unpickling this object runs code: it creates ``marker`` (stands in for any attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _metadata(config: UNetConfig = TINY, **changes: str) -> dict[str, str]:
    meta = {"format": FORMAT, "model": json.dumps(config.to_dict()), "postprocess": "{}", "tta": "none", "info": "{}"}
    meta.update(changes)
    return meta


def _tensors(config: UNetConfig = TINY) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in UNet(config).state_dict().items()}


@pytest.fixture()
def good(tmp_path) -> Path:
    path = tmp_path / "good.safetensors"
    torch.manual_seed(0)
    save_weights(path, UNet(TINY))
    return path


# ----------------------------------------------------------------------------- crafted pickles


@pytest.mark.parametrize(
    "kind", ["torch.save zip", "raw pickle protocol 2", "raw pickle protocol 0", "raw pickle protocol 5"]
)
def test_crafted_pickle_renamed_safetensors_never_runs(tmp_path, kind):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.safetensors"
    if kind == "torch.save zip":
        torch.save({"state_dict": Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(Payload(marker), protocol=int(kind[-1])))

    # The payload is live: unpickling a copy really runs it (into another marker).
    proof = tmp_path / "proof"
    live = tmp_path / "copy.pkl"
    if kind == "torch.save zip":
        torch.save({"state_dict": Payload(proof)}, live)
        torch.load(live, weights_only=False)
    else:
        pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.read_text() == "code ran"

    with pytest.raises(LggsegError, match="pickle checkpoint, not safetensors; lggseg never unpickles"):
        load_weights(evil)
    assert not marker.exists()


def test_pickle_hidden_after_a_safetensors_like_prefix_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Payload(marker))
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(struct.pack("<Q", len(payload)) + payload)
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(evil)
    assert not marker.exists()


def test_a_real_pytorch_checkpoint_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "unet.pt"
    torch.save(UNet(TINY).state_dict(), path)
    with pytest.raises(LggsegError, match="Convert it with safetensors.torch.save_file"):
        load_weights(path)


def test_no_pickle_path_exists_in_the_package():
    source = Path(lggseg.__file__).parent
    pattern = re.compile(
        r"\btorch\.load\(|\bpickle\.loads?\(|^\s*import pickle|^\s*from pickle|\bjoblib\b|\bdill\b", re.MULTILINE
    )
    offenders = [str(p) for p in source.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


# ----------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, -1])
def test_truncated_file_is_refused(good, keep):
    data = good.read_bytes()
    cut = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    good.write_bytes(cut)
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(good)


def test_header_declaring_an_absurd_length_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b'{"a":1}')
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(path)


def test_tensor_offsets_beyond_the_file_are_refused(tmp_path):
    header = json.dumps({"stem.0.weight": {"dtype": "F32", "shape": [4, 3, 3, 3], "data_offsets": [0, 10**9]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(path)


# ----------------------------------------------------------------------------- wrong architecture


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> Path:
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "shapes of another width",
            r"tensor stem\.0\.weight has shape \(4, 3, 3, 3\), the architecture needs \(8, 3, 3, 3\)",
        ),
        ("another depth", r"tensors do not match the U-Net architecture \(missing"),
        ("extra tensor", r"tensors do not match the U-Net architecture \(unexpected \['classifier.weight'\]"),
        ("missing tensor", r"tensors do not match the U-Net architecture \(missing \['head.bias'\]"),
        ("foreign model without metadata", r"not an lggseg U-Net weights file \(format=None\)"),
        ("foreign format", r"not an lggseg U-Net weights file \(format='pt'\)"),
        ("broken model metadata", r"bad model metadata"),
        ("unknown architecture key", r"bad model metadata"),
        ("invalid architecture value", r"bad model metadata \(depth must be between 1 and 6"),
        ("unknown tta", r"unknown test-time augmentation 'rot90'"),
    ],
    ids=[
        "other-width",
        "other-depth",
        "extra-tensor",
        "missing-tensor",
        "foreign-model",
        "foreign-format",
        "broken-metadata",
        "unknown-key",
        "invalid-depth",
        "unknown-tta",
    ],
)
def test_wrong_architecture_or_shapes_are_refused(tmp_path, case, message):
    tensors, meta = _tensors(), _metadata()
    if case == "shapes of another width":
        meta = _metadata(UNetConfig(base_width=8, depth=2))
    elif case == "another depth":
        meta = _metadata(UNetConfig(base_width=4, depth=3))
    elif case == "extra tensor":
        tensors["classifier.weight"] = torch.zeros(2, 2)
    elif case == "missing tensor":
        del tensors["head.bias"]
    elif case == "foreign model without metadata":
        tensors, meta = {k: v.contiguous() for k, v in torch.nn.Linear(4, 2).state_dict().items()}, None
    elif case == "foreign format":
        meta = {"format": "pt"}
    elif case == "broken model metadata":
        meta = _metadata(model="{not json")
    elif case == "unknown architecture key":
        meta = _metadata(model=json.dumps({**TINY.to_dict(), "attention": True}))
    elif case == "invalid architecture value":
        meta = _metadata(model=json.dumps({**TINY.to_dict(), "depth": 99}))
    elif case == "unknown tta":
        meta = _metadata(tta="rot90")
    path = _write(tmp_path / "w.safetensors", tensors, meta)
    with pytest.raises(LggsegError, match=message):
        load_weights(path)


# ----------------------------------------------------------------------------- the shipped model's hash


@pytest.fixture()
def tampered_shipped(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped model with one weight changed, installed in its place."""
    copy = tmp_path / "lggseg_unet.safetensors"
    shutil.copyfile(shipped_weights_path(), copy)
    data = bytearray(copy.read_bytes())
    data[-3] ^= 0x01  # a low bit of the last tensor's data: still a valid safetensors file
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(weights_module, "shipped_weights_path", lambda: copy)
    return copy


def test_tampered_shipped_model_is_refused_by_hash(tampered_shipped):
    load_weights(tampered_shipped)  # as a plain file it is a valid model...
    with pytest.raises(
        LggsegError,
        match=(
            r"SHA-256 [0-9a-f]{12}\.\.\. does not match the expected [0-9a-f]{12}\.\.\.; the file is damaged or "
            r"replaced"
        ),
    ):
        load_weights(None)  # ...but not the model that was shipped


def test_missing_shipped_hash_record_is_refused(monkeypatch):
    real = shipped_weights_path()
    monkeypatch.setattr(weights_module, "shipped_weights_path", lambda: real)
    monkeypatch.setattr(weights_module, "SHIPPED_NAME", "no_such_model.safetensors")
    with pytest.raises(LggsegError, match="recorded hash .* is missing or malformed"):
        load_weights(None)


def test_shipped_model_hash_matches():
    assert sha256_of(shipped_weights_path()) == weights_module.shipped_sha256()


# ----------------------------------------------------------------------------- through the CLI


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def _bad_weights(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.safetensors"
    if kind == "pickle":
        torch.save({"state_dict": Payload(tmp_path / "PWNED")}, path)
    elif kind == "truncated":
        torch.manual_seed(0)
        save_weights(path, UNet(TINY))
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "wrong_shapes":
        _write(path, _tensors(), _metadata(UNetConfig(base_width=8, depth=2)))
    elif kind == "foreign":
        _write(path, {k: v.contiguous() for k, v in torch.nn.Linear(4, 2).state_dict().items()}, None)
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("pickle", "looks like a PyTorch/pickle checkpoint"),
        ("truncated", "not a valid safetensors weights file"),
        ("wrong_shapes", "the architecture needs"),
        ("foreign", "not an lggseg U-Net weights file"),
        ("missing", "weights file not found"),
    ],
    ids=["pickle", "truncated", "wrong_shapes", "foreign", "missing"],
)
def test_cli_refuses_bad_weights_with_one_line(tmp_path, capsys, kind, message):
    image = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    weights = _bad_weights(tmp_path, kind)
    code, err = _cli(["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {weights}: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_cli_refuses_tampered_shipped_model_with_one_line(tmp_path, capsys, tampered_shipped):
    image = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    code, err = _cli(["predict", str(image), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "does not match the expected" in lines[0] and lines[0].startswith("error: "), err


# ----------------------------------------------------------------------------- writing


def test_saved_weights_are_readable_by_others_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "w.safetensors"
    old_umask = os.umask(0o022)
    try:
        save_weights(path, UNet(TINY))
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_a_header_length_whose_low_byte_is_0x80_is_not_taken_for_a_pickle(tmp_path):
    """0x80 opens a pickle (PROTO) only with a protocol byte 2-5 after it; a safetensors file whose
    header length is 0x1580 starts with 0x80 too, and a truncated one must be called damaged."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x80\x15\x00\x00\x00\x00\x00")
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(path)
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(LggsegError, match="looks like a PyTorch/pickle checkpoint"):
        load_weights(path)
