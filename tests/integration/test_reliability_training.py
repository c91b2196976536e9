"""Crash-safe training on a tiny configuration (real sample slices, a 4-wide U-Net, 3 short epochs).

* SIGKILL ``lggseg train`` at a random point after the first checkpoint, ``--resume`` it, and
  the final weights and optimizer state equal an uninterrupted run's bit for bit.
* SIGINT finishes the epoch, writes a resumable checkpoint and stops; a second SIGINT aborts at
  once and the last checkpoint still loads.
* The checkpoint is one file written atomically: ``checkpoint.safetensors`` reads whenever it is
  read during training, a killed writer never leaves a partial file, and no temporary file is left
  after a run that ends normally or by SIGINT.

The bundled sample's two patients are in canonical fold 0, so training uses ``fold: 1`` (one
patient trains, one validates).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lggseg.commands.cli import main
from lggseg.model.bundle import load_weights
from lggseg.train.run_folder import RunFolder

pytestmark = pytest.mark.slow

TINY = {
    "fold": 1,
    "n_validation": 1,
    "seed": 7,
    "epochs": 3,
    "samples_per_epoch": 32,
    "batch_size": 4,
    "calibrate": False,
    "threads": 1,
    "device": "cpu",
    "model": {"base_width": 4, "depth": 2},
}
EPOCHS = TINY["epochs"]
KILL_SEED = 20240607  # the kill point is drawn from this seed (a fraction of an epoch's duration)
TIMEOUT = 900.0  # generous: a loaded CI machine is slow, and a timeout is not what we test
_STARTED: list[subprocess.Popen] = []


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(args: list[str], log: Path, inherit_ignored_sigint: bool = False) -> subprocess.Popen:
    """``lggseg train ARGS`` in a child process; optionally with SIGINT ignored from the start, as a
    shell starts a background job (``lggseg train ... &``)."""
    handle = open(log, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lggseg", "train", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=_env(),
        preexec_fn=_ignore_sigint if inherit_ignored_sigint else None,
    )
    handle.close()
    _STARTED.append(process)
    return process


@pytest.fixture(scope="module", autouse=True)
def _no_stray_processes():
    """Whatever a failing test leaves running is killed when the module ends."""
    yield
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


class RunWatcher:
    """Polls a run folder while its process trains; every checkpoint read must parse."""

    def __init__(self, run: Path, process: subprocess.Popen) -> None:
        self.run, self.process, self.reads = run, process, 0

    def state(self) -> dict | None:
        folder = RunFolder(self.run)
        if not folder.checkpoint.exists():
            return None
        try:
            state = folder.state()  # raises (fails the test) on a half-written file
        except FileNotFoundError:  # replaced between the check and the read: read the next one
            return None
        self.reads += 1
        return state

    def wait_for(self, condition: Callable[[dict], bool], what: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and condition(state):
                return state
            if self.process.poll() is not None:
                raise AssertionError(f"training exited ({self.process.returncode}) before {what}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def finish(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        while self.process.poll() is None:
            self.state()
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError("training did not finish in time")
            time.sleep(0.05)
        return self.process.returncode


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_dir) -> dict[str, Path]:
    import shutil

    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    shutil.copytree(sample_dir, data)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    return {"root": root, "data": data, "config": config}


@pytest.fixture(scope="module")
def reference(setup) -> Callable[[], Path]:
    """An uninterrupted run, started in the background the first time it is asked for."""
    run = setup["root"] / "reference"
    process = _start(
        ["--data", str(setup["data"]), "--config", str(setup["config"]), "--out", str(run)],
        setup["root"] / "reference.log",
    )
    watcher = RunWatcher(run, process)

    def wait() -> Path:
        code = watcher.finish()
        assert code == 0, (setup["root"] / "reference.log").read_text()
        return run

    return wait


def _new_run(setup, name: str) -> tuple[Path, subprocess.Popen, RunWatcher]:
    run = setup["root"] / name
    process = _start(
        ["--data", str(setup["data"]), "--config", str(setup["config"]), "--out", str(run)],
        setup["root"] / f"{name}.log",
    )
    return run, process, RunWatcher(run, process)


def _resume(setup, run: Path, name: str) -> str:
    log = setup["root"] / f"{name}.log"
    process = _start(["--resume", str(run)], log)
    code = RunWatcher(run, process).finish()
    text = log.read_text()
    assert code == 0, text
    return text


def _wait_for_output(log: Path, text: str, watcher: RunWatcher) -> None:
    """Wait until the training process has printed ``text`` (polling its state meanwhile)."""
    deadline = time.monotonic() + TIMEOUT
    while text not in log.read_text():
        watcher.state()
        if watcher.process.poll() is not None:
            raise AssertionError(f"training exited ({watcher.process.returncode}) before printing {text!r}")
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}"
        time.sleep(0.02)


def _temp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


def _assert_checkpoint_loads(run: Path) -> dict:
    folder = RunFolder(run)
    state = folder.state()
    tensors = load_file(str(folder.checkpoint))
    assert any(k.startswith("model.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert load_weights(folder.best).info["epoch"] == state["best_epoch"]
    names = {p.name for p in run.iterdir() if not p.name.startswith(".")}
    assert {"best.safetensors", "checkpoint.safetensors", "config.yaml", "split.json"} <= names
    assert names <= {"best.safetensors", "checkpoint.safetensors", "config.yaml", "split.json", "log.csv", "curves.png"}
    return state


def _assert_same_final_state(run: Path, ref: Path) -> None:
    """Bit-for-bit: weights, BatchNorm buffers, AdamW moments and step, and the epoch history."""
    for name in ("checkpoint.safetensors", "best.safetensors"):
        got, want = load_file(str(run / name)), load_file(str(ref / name))
        assert got.keys() == want.keys(), name
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{name}: {len(different)} tensor(s) differ, e.g. {different[:3]}"
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in RunFolder(run).state()["history"]]
    expected = [{k: v for k, v in row.items() if k != "seconds"} for row in RunFolder(ref).state()["history"]]
    assert history == expected
    assert len((run / "log.csv").read_text().strip().splitlines()) == EPOCHS + 1


def test_sigkill_at_a_random_point_then_resume_ends_bit_identical(setup, reference):
    run, process, watcher = _new_run(setup, "killed")
    first = watcher.wait_for(lambda s: s["epoch"] >= 0, "the first checkpoint")
    epoch_seconds = first["history"][0]["seconds"]
    delay = random.Random(KILL_SEED).uniform(0.05, 0.6) * epoch_seconds  # inside epoch 2 (or early 3)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        watcher.state()
        time.sleep(0.01)
    assert process.poll() is None, "training ended before the kill"
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = _assert_checkpoint_loads(run)  # whatever was on disk at the kill is complete
    assert state["epoch"] < EPOCHS - 1, "the kill must interrupt the run"

    output = _resume(setup, run, "killed-resume")
    assert f"resuming {run} after epoch {state['epoch'] + 1}" in output
    assert watcher.reads > 0
    _assert_same_final_state(run, reference())


def test_sigint_finishes_the_epoch_and_leaves_a_resumable_checkpoint(setup, reference):
    run, process, watcher = _new_run(setup, "interrupted")
    _wait_for_output(setup["root"] / "interrupted.log", f"epoch 1/{EPOCHS}: loss", watcher)
    process.send_signal(signal.SIGINT)  # early in epoch 2 (or just before epoch 1's last check)
    code = watcher.finish()
    output = (setup["root"] / "interrupted.log").read_text()
    assert code == 0, output
    assert "interrupt: finishing this epoch's checkpoint" in output
    stopped = re.search(rf"stopped after epoch (\d+); resume with --resume {re.escape(str(run))}", output)
    assert stopped and int(stopped[1]) < EPOCHS, output
    assert "Traceback" not in output
    state = _assert_checkpoint_loads(run)
    assert state["epoch"] == int(stopped[1]) - 1 and len(state["history"]) == int(stopped[1])
    assert _temp_files(run) == []

    _resume(setup, run, "interrupted-resume")
    assert _temp_files(run) == []
    _assert_same_final_state(run, reference())


@pytest.mark.parametrize("inherit_ignored_sigint", [False, True], ids=["foreground", "background-job"])
def test_second_sigint_aborts_at_once_and_keeps_the_last_checkpoint(setup, inherit_ignored_sigint):
    # Epochs long enough (100 steps) that the second Ctrl-C lands while the epoch still runs: with the
    # 8-step epochs of TINY an epoch can end between the two signals, and the run then stops normally.
    config = setup["root"] / "tiny_long_epochs.yaml"
    config.write_text(yaml.safe_dump({**TINY, "samples_per_epoch": 400}))
    run = setup["root"] / f"aborted-{inherit_ignored_sigint}"
    log = setup["root"] / f"aborted-{inherit_ignored_sigint}.log"
    process = _start(
        ["--data", str(setup["data"]), "--config", str(config), "--out", str(run)], log, inherit_ignored_sigint
    )
    watcher = RunWatcher(run, process)
    _wait_for_output(log, f"epoch 1/{EPOCHS}: loss", watcher)
    process.send_signal(signal.SIGINT)
    _wait_for_output(log, "press Ctrl-C again to abort", watcher)  # the first one was handled
    process.send_signal(signal.SIGINT)
    code = watcher.finish()
    output = log.read_text()
    assert code == 130, output
    assert "Traceback" not in output  # (typer turns the KeyboardInterrupt into a silent Exit(130))
    state = _assert_checkpoint_loads(run)
    assert state["epoch"] in (0, 1)
    assert _temp_files(run) == []


def test_uninterrupted_run_leaves_no_temporary_files(reference):
    run = reference()
    assert _temp_files(run) == []
    state = _assert_checkpoint_loads(run)
    assert state["epoch"] == EPOCHS - 1


def test_kill_before_the_first_checkpoint_says_start_again(setup, capsys):
    run, process, watcher = _new_run(setup, "early")
    deadline = time.monotonic() + TIMEOUT
    while not (run / "config.yaml").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoint.safetensors").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip() == f"error: {run}: not a run folder to resume (no checkpoint.safetensors)"


# ----------------------------------------------------------------------------- atomic writes

WRITER = """
import sys
from lggseg.io import atomic

target, size = sys.argv[1], int(sys.argv[2])
blocks = [bytes([65 + i]) * size for i in range(4)]
i = 0
print("ready", flush=True)
while True:
    atomic.write_bytes(target, blocks[i % 4])
    i += 1
"""


def test_a_writer_killed_mid_write_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "state.json"
    size = 4 << 20
    rng = random.Random(KILL_SEED)
    for attempt in range(5):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target), str(size)], stdout=subprocess.PIPE, env=_env()
        )
        assert process.stdout.readline().strip() == b"ready"
        while not target.exists():
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        data = target.read_bytes()
        assert len(data) == size and data == data[:1] * size, f"attempt {attempt}: partial or mixed file"
    # a SIGKILL can strand a temporary file, but only a hidden one beside the target
    assert all(p.name.startswith(".state.json.") for p in tmp_path.iterdir() if p != target)


def test_failed_atomic_write_keeps_the_previous_file(tmp_path, monkeypatch):
    from lggseg.io import atomic

    target = tmp_path / "last.safetensors"
    atomic.write_bytes(target, b"previous")

    def broken_writer(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.write_with(target, broken_writer)
    assert target.read_bytes() == b"previous"
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


# ----------------------------------------------------------------------------- a known gap


class _Killed(BaseException):
    """Stands in for SIGKILL at an exact instant (nothing in the code under test catches it)."""


def test_kill_between_best_weights_and_checkpoint_still_resumes_exactly(setup, reference, monkeypatch):
    from lggseg.io import atomic
    from lggseg.train.config import load_config
    from lggseg.train.loop import train

    real_write_bytes = atomic.write_bytes
    commits = []

    def dies_before_second_checkpoint(target, data):
        if Path(target).name == "checkpoint.safetensors":
            commits.append(target)
            if len(commits) == 2:
                raise _Killed()  # epoch 2's best.safetensors (if it improved) is already on disk
        real_write_bytes(target, data)

    cfg = load_config(setup["config"]).replace(data=str(setup["data"]), out=str(setup["root"] / "between"))
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(atomic, "write_bytes", dies_before_second_checkpoint)
        with pytest.raises(_Killed):
            train(cfg, log=lambda message: None)
        assert RunFolder(cfg.out).state()["epoch"] == 0  # the last commit is epoch 1's
        monkeypatch.setattr(atomic, "write_bytes", real_write_bytes)
        train(cfg, resume=True, log=lambda message: None)
    finally:
        torch.set_num_threads(threads)
    _assert_same_final_state(Path(cfg.out), reference())
