"""Hostile weights files: metadata out of bounds, absurd headers, FIFOs and devices (issue 12).

Nothing is built or allocated before the metadata is checked; non-regular files are never read.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors

from lggseg.commands.cli import main
from lggseg.errors import LggsegError
from lggseg.model.bundle import FORMAT, MAX_HEADER_BYTES, PostProcess, load_weights, save_weights
from lggseg.model.unet import UNet, UNetConfig

TINY = UNetConfig(base_width=4, depth=2)


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in UNet(TINY).state_dict().items()}


def _write(path: Path, model: Any = None, post: Any = None, tta: str = "none") -> Path:
    meta = {
        "format": FORMAT,
        "model": json.dumps(TINY.to_dict() if model is None else model),
        "postprocess": json.dumps({} if post is None else post),
        "tta": tta,
        "info": "{}",
    }
    path.write_bytes(save_safetensors(_tensors(), metadata=meta))
    return path


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"base_width": 512, "depth": 6}, "base_width must be at most 256"),
        ({"base_width": 256, "depth": 6}, "parameters, limit"),
        ({"base_width": 16.5}, "base_width must be an integer"),
        ({"base_width": "16"}, "base_width must be an integer"),
        ({"base_width": True}, "base_width must be an integer"),
        ({"depth": 99}, "depth must be between 1 and 6"),
        ({"in_channels": 0}, "in_channels and out_channels must be >= 1"),
        ({"out_channels": 33}, "channels must be between 1 and 32"),
        ({"mirror": "yes"}, "mirror must be true or false"),
        ({"dropout": float("nan")}, "dropout must be a finite number"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"attention": True}, "unknown architecture keys"),
    ],
)
def test_architecture_metadata_out_of_bounds_is_refused_before_building(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path / "w.safetensors", model={**TINY.to_dict(), **changes})
    measured = _reset_peak()
    before = _rss_kb()
    with pytest.raises(LggsegError, match=f"bad model metadata .*{message}"):
        load_weights(path)
    if measured:  # base_width 512, depth 6 used to allocate 5 GB before failing
        assert _peak_kb() - before < 200_000


@pytest.mark.parametrize(
    "post, message",
    [
        ({"threshold": "abc"}, "threshold must be a number in"),
        ({"threshold": float("nan")}, "threshold must be a number in"),
        ({"threshold": 0.0}, "threshold must be a number in"),
        ({"threshold": 1.0}, "threshold must be a number in"),
        ({"threshold": 1.5}, "threshold must be a number in"),
        ({"min_component": -1}, "min_component must be an integer >= 0"),
        ({"min_component": 2.5}, "min_component must be an integer >= 0"),
        ({"min_component": True}, "min_component must be an integer >= 0"),
        ({"min_peak": 1.0}, r"min_peak must be a number in \[0, 1\)"),
        ({"min_peak": float("inf")}, r"min_peak must be a number in \[0, 1\)"),
        ({"min_extent": -2}, "min_extent must be an integer >= 0"),
        ({"min_extent": 1.5}, "min_extent must be an integer >= 0"),
        ({"min_end_core": -1}, "min_end_core must be an integer >= 0"),
        ({"min_end_core": 0.5}, "min_end_core must be an integer >= 0"),
        ({"keep_largest": "yes"}, "keep_largest must be true or false"),
        ({"fill_holes": 1}, "fill_holes must be true or false"),
        ({"other": 1}, "unexpected keyword argument"),
    ],
)
def test_postprocessing_metadata_out_of_bounds_is_refused(tmp_path: Path, post: dict[str, Any], message: str) -> None:
    with pytest.raises(LggsegError, match=f"bad model metadata .*{message}"):
        load_weights(_write(tmp_path / "w.safetensors", post=post))


def test_valid_postprocessing_values_load(tmp_path: Path) -> None:
    post = {"threshold": 0.35, "min_component": 100, "keep_largest": False, "min_peak": 0.9, "min_extent": 3}
    bundle = load_weights(_write(tmp_path / "w.safetensors", post=post, tta="flip"))
    assert bundle.post == PostProcess(0.35, 100, False, 0.9, min_extent=3) and bundle.tta == "flip"
    assert bundle.post.min_end_core == 0  # weights calibrated before the end-core rule load without it
    trimmed = load_weights(_write(tmp_path / "t.safetensors", post={**post, "min_end_core": 150})).post
    assert trimmed.min_end_core == 150 and trimmed.n_rules == 4
    assert bundle.post.fill_holes is False  # weights calibrated before the hole fill load without it
    filled = load_weights(_write(tmp_path / "f.safetensors", post={**post, "fill_holes": True})).post
    assert filled.fill_holes is True and filled.n_rules == 4
    assert PostProcess(np.float64(0.4), np.int64(3)).min_component == 3  # numpy scalars are numbers too


def test_unknown_tta_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LggsegError, match="unknown test-time augmentation 'rot90'"):
        load_weights(_write(tmp_path / "w.safetensors", tta="rot90"))


@pytest.mark.parametrize("claimed", [MAX_HEADER_BYTES + 1, 2**40, 2**64 - 1])
def test_absurd_header_lengths_are_refused_without_reading_them(tmp_path: Path, claimed: int) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", claimed) + b'{"a":1}' + b" " * 64)
    with pytest.raises(LggsegError, match=rf"not a valid safetensors weights file \(header of {claimed} bytes"):
        load_weights(path)


def test_a_deeply_nested_header_is_refused_with_one_line(tmp_path: Path) -> None:
    header = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(LggsegError, match="not a valid safetensors weights file"):
        load_weights(path)


def _load_in_thread(path: Path) -> BaseException | None:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            load_weights(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "loading blocked"
    return raised[0] if raised else None


def test_weights_from_a_fifo_or_dev_zero_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        if not path.exists():
            continue
        raised = _load_in_thread(path)
        assert isinstance(raised, LggsegError)
        assert str(raised) == f"{path}: not a regular file (a device, FIFO or socket); refused"


def test_cli_refuses_fifo_weights_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(image), "--weights", str(fifo), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines() == [f"error: {fifo}: not a regular file (a device, FIFO or socket); refused"]


def test_saved_and_loaded_weights_still_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(TINY)
    save_weights(tmp_path / "w.safetensors", model, PostProcess(0.45, 10, False, 0.5), "flip", {"fold": 1})
    bundle = load_weights(tmp_path / "w.safetensors")
    assert bundle.post == PostProcess(0.45, 10, False, 0.5) and bundle.info == {"fold": 1}
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value)
