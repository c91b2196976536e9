"""Distributed training (lggseg.train.distributed + train under DDP): two CPU processes with gloo.

The tiny run trains on the bundled real sample: both sample patients belong to canonical fold 0,
so training for fold 1 uses them as its pool (1 training, 1 validation patient, no test patient).
Augmentation is switched off so that a sample's network input depends only on its index, which
lets the test line up every DDP rank's batch with the single-process batch.

What "matches a single-process run with the same global batch" means here: DDP's objective for
one step is the mean of the ranks' losses, each computed on the rank's share of the global batch
(BatchNorm statistics and the batch-pooled soft Dice are per rank). Its single-process
equivalent is gradient accumulation over the same shares. The test checks that
(1) the ranks' shares are disjoint and together are exactly the single-process batch,
(2) the loss and averaged gradients of the DDP step equal the accumulated single-process ones,
(3) the run folder holds one checkpoint, written by rank 0 only, and a resumed run ends with the
    same weights as an uninterrupted one.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lggseg.commands.cli import main
from lggseg.data.bundled import sample_root
from lggseg.errors import LggsegError
from lggseg.infer import runtime
from lggseg.model.unet import UNet
from lggseg.train import distributed
from lggseg.train.config import config_from_dict, load_config
from lggseg.train.distributed import Dist
from lggseg.train.loop import StepInfo, train
from lggseg.train.losses import dice_bce_loss

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="needs torch.distributed with gloo",
    ),
]


def tiny_config(out: Path, **changes):
    """1 epoch of 2 steps with a global batch of 4, a 4-wide 2-level U-Net, no augmentation.

    One thread per process: oneDNN picks other convolution algorithms for other thread counts,
    and the rounding differences they make grow through batch-2 BatchNorm to ~1e-3.
    """
    values = {
        "data": str(sample_root()),
        "out": str(out),
        "fold": 1,
        "n_validation": 1,
        "epochs": 1,
        "samples_per_epoch": 8,
        "batch_size": 4,
        "calibrate": False,
        "bf16": "off",
        "device": "cpu",
        "threads": 1,
        "model": {"base_width": 4, "depth": 2},
        "augment": {"flip_prob": 0.0, "affine_prob": 0.0, "intensity_prob": 0.0, "noise_std": 0.0},
        **changes,
    }
    return config_from_dict(values)


def record_first_step(folder: Path, info: StepInfo) -> None:
    """step_callback: save rank ``info.rank``'s first step (indices, inputs, loss, gradients)."""
    if info.epoch == 0 and info.step == 0:
        grads = {name: p.grad.detach().clone() for name, p in info.model.named_parameters()}
        torch.save(
            {"indices": info.indices, "x": info.x, "y": info.y, "loss": info.loss, "grads": grads},
            folder / f"rank{info.rank}.pt",
        )


def quiet(message: str) -> None:
    pass


@pytest.fixture()
def restore_threads():
    """train() in this process sets torch's thread count; put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_shard_is_a_strided_split_of_each_global_batch() -> None:
    order = torch.arange(24)
    shares = [distributed.shard(order, Dist(rank=r, world_size=3, enabled=True)) for r in range(3)]
    assert sorted(torch.cat(shares).tolist()) == order.tolist()
    for step in range(2):  # global batch 12 = 4 per rank
        together = torch.cat([share[step * 4 : (step + 1) * 4] for share in shares])
        assert sorted(together.tolist()) == order[step * 12 : (step + 1) * 12].tolist()
    assert torch.equal(distributed.shard(order, distributed.SINGLE), order)


def test_batch_and_sync_bn_rules() -> None:
    assert distributed.local_batch_size(16, Dist(world_size=4, enabled=True)) == 4
    with pytest.raises(LggsegError, match="divisible"):
        distributed.local_batch_size(16, Dist(world_size=3, enabled=True))
    with pytest.raises(LggsegError, match="BatchNorm"):
        distributed.local_batch_size(4, Dist(world_size=4, enabled=True))
    with pytest.raises(LggsegError, match="sync_bn needs CUDA"):
        distributed.wrap_model(
            torch.nn.BatchNorm2d(2), Dist(world_size=2, enabled=True), torch.device("cpu"), sync_bn=True
        )
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, distributed.SINGLE, torch.device("cpu"), sync_bn=True) is model


def test_cli_rejects_bad_nproc(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for nproc, message in (("3", "divisible"), ("0", "--nproc must be >= 1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--data", str(sample_root()), "--out", str(tmp_path / "run"), "--nproc", nproc])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_worker_user_error_is_raised_in_the_parent() -> None:
    with pytest.raises(LggsegError, match="config file not found"):
        distributed.launch(2, load_config, "/nonexistent/lggseg.yaml")


@pytest.mark.slow
def test_two_gloo_processes_match_single_process_and_resume(
    tmp_path: Path, capfd: pytest.CaptureFixture, restore_threads: None
) -> None:
    single_steps, ddp_steps = tmp_path / "single_steps", tmp_path / "ddp_steps"
    single_steps.mkdir()
    ddp_steps.mkdir()
    cfg = tiny_config(tmp_path / "single", epochs=2)
    train(cfg, log=quiet, step_callback=functools.partial(record_first_step, single_steps), stop_after_epochs=1)

    # two processes, one epoch of the 2-epoch schedule, then a resume to the end
    ddp_run = tmp_path / "ddp"
    ddp_cfg = cfg.replace(out=str(ddp_run))
    distributed.launch(
        2, train, ddp_cfg, log=print, stop_after_epochs=1, step_callback=functools.partial(record_first_step, ddp_steps)
    )
    first_output = capfd.readouterr().out
    assert first_output.count("epoch 1/2:") == 1, "only rank 0 logs"
    assert "distributed: 2 process(es), global batch 4 = 2 per process" in first_output
    files = sorted(p.name for p in ddp_run.iterdir())
    assert files == ["best.safetensors", "checkpoint.safetensors", "config.yaml", "curves.png", "log.csv", "split.json"]
    assert len((ddp_run / "log.csv").read_text().splitlines()) == 2  # header + 1 epoch

    # (1) the shares are disjoint and make up the single-process batch, sample by sample
    single = torch.load(single_steps / "rank0.pt")
    ranks = [torch.load(ddp_steps / f"rank{r}.pt") for r in range(2)]
    for r, rank in enumerate(ranks):
        assert torch.equal(rank["indices"], single["indices"][r::2])
        torch.testing.assert_close(rank["x"], single["x"][r::2], rtol=0, atol=0)
        torch.testing.assert_close(rank["y"], single["y"][r::2], rtol=0, atol=0)
    for name in ranks[0]["grads"]:  # DDP leaves the same averaged gradient on every rank
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], rtol=1e-6, atol=1e-8)

    # (2) single process, same initial model and global batch: the full batch reproduces the
    # single-process train() step; accumulating over the ranks' shares reproduces the DDP step
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = runtime.prepare_model(UNet(cfg.model), torch.device("cpu")).train()
    full_loss = dice_bce_loss(model(single["x"]), single["y"], cfg.bce_weight)
    full_loss.backward()
    torch.testing.assert_close(full_loss.detach(), single["loss"])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, single["grads"][name], rtol=1e-5, atol=1e-8)
    model.zero_grad()
    shard_losses = [dice_bce_loss(model(single["x"][r::2]), single["y"][r::2], cfg.bce_weight) for r in range(2)]
    torch.stack(shard_losses).mean().backward()
    for r in range(2):
        torch.testing.assert_close(ranks[r]["loss"], shard_losses[r].detach(), rtol=1e-5, atol=1e-8)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ranks[0]["grads"][name], p.grad, rtol=1e-5, atol=1e-8)

    # (3) resume with two processes: one more epoch, same files, history continued
    distributed.launch(2, train, ddp_cfg, resume=True, log=print)
    resumed_output = capfd.readouterr().out
    assert resumed_output.count("resuming") == 1 and resumed_output.count("epoch 2/2:") == 1
    state = (ddp_run / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in state[1:]] == ["1", "2"]
    assert sorted(p.name for p in ddp_run.iterdir()) == files

    # ... and ends with the same weights as an uninterrupted two-process run
    distributed.launch(2, train, ddp_cfg.replace(out=str(tmp_path / "ddp_straight")), log=quiet)
    resumed, straight = (
        load_file(ddp_run / "checkpoint.safetensors"),
        load_file(tmp_path / "ddp_straight" / "checkpoint.safetensors"),
    )
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)
