"""Process groups for data-parallel training: torchrun (DDP) or ``lggseg train --nproc N``.

A training process is *distributed* when it was started by ``torchrun`` (or by :func:`launch`,
which sets the same environment variables: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Then :func:`process_group` joins the
group (NCCL on CUDA, gloo on CPU), each rank gets its own device (``cuda:LOCAL_RANK``), and the
model is wrapped in ``DistributedDataParallel``, even with a single process, so that
``torchrun --nproc_per_node=1`` runs the same code path as many GPUs. A process started any
other way is one rank of one (:data:`SINGLE`) and nothing here changes what it does.

These torchrun variables are the only environment the package reads; they describe how the
process was launched, never where data or outputs live.

Batch convention (see docs/distributed.md): ``batch_size`` in the config is the *global* batch.
Each of the ``W`` ranks takes ``batch_size / W`` samples per step: :func:`shard` gives rank
``r`` the positions ``r, r + W, r + 2W, ...`` of the epoch's index list, so step ``s`` of all
ranks together covers exactly the samples of step ``s`` of a single-process run. DDP averages
the gradients of the ranks' losses.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lggseg.errors import LggsegError
from lggseg.infer import runtime

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job.

    ``enabled`` is True inside a process group (torchrun or :func:`launch`, any world size);
    a plain process is ``Dist()``: rank 0 of 1, not enabled.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, draws progress bars and writes files."""
        return self.rank == 0


SINGLE = Dist()


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are set for this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_from_env() -> Dist:
    """Read this process's rank and world size from the torchrun variables (SINGLE without them)."""
    if not launched_by_torchrun():
        return SINGLE
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise LggsegError("torchrun variables RANK/WORLD_SIZE/LOCAL_RANK must be integers") from None
    if not 0 <= rank < world:
        raise LggsegError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Dist(rank, world, local_rank, local_world, enabled=True)


def device_for(name: str, dist: Dist) -> torch.device:
    """The device of this rank: ``pick_device(name)``, with CUDA pinned to ``cuda:LOCAL_RANK`` in a group."""
    device = runtime.pick_device(name)
    if not dist.enabled or device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise LggsegError(f"device {name!r} asks for CUDA, but no CUDA device is available")
    if dist.local_rank >= torch.cuda.device_count():
        raise LggsegError(
            f"LOCAL_RANK {dist.local_rank} has no GPU: this node has {torch.cuda.device_count()}; start at most that "
            "many processes per node"
        )
    torch.cuda.set_device(dist.local_rank)
    return torch.device("cuda", dist.local_rank)


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[tuple[Dist, torch.device]]:
    """Join the torchrun process group if launched that way; yield ``(dist, device)``.

    Backend: NCCL when the rank's device is CUDA, gloo on CPU. A group that the caller already
    initialised is reused and left open; one created here is destroyed on exit.
    """
    dist = dist_from_env()
    device = device_for(device_name, dist)
    if not dist.enabled:
        yield dist, device
        return
    import torch.distributed as td

    if not td.is_available():
        raise LggsegError("this PyTorch build has no torch.distributed; run without torchrun / --nproc")
    created = not td.is_initialized()
    if created:
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend=backend, init_method="env://", rank=dist.rank, world_size=dist.world_size)
    try:
        yield dist, device
        if created:  # every rank is done with the group before any rank tears it down (gloo aborts otherwise)
            td.barrier()
    finally:
        if created and td.is_initialized():
            td.destroy_process_group()


def local_batch_size(batch_size: int, dist: Dist) -> int:
    """Samples per rank and step: the global ``batch_size`` split evenly over the ranks."""
    if batch_size % dist.world_size:
        raise LggsegError(
            f"batch_size {batch_size} (the global batch) must be divisible by the number of processes "
            f"({dist.world_size})"
        )
    local = batch_size // dist.world_size
    if local < 2:
        raise LggsegError(
            f"batch_size {batch_size} over {dist.world_size} processes leaves {local} sample per process; BatchNorm "
            "needs >= 2 (raise batch_size)"
        )
    return local


def threads_per_rank(dist: Dist) -> int:
    """CPU threads for one rank: the cores this process may use, shared by the node's ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // dist.local_world_size)


def shard(order: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's disjoint share of an epoch's indices: positions ``rank::world_size``.

    order: ``(N,)`` indices in the order a single process would use them, ``N`` a multiple of the
    global batch. Returns ``(N / world_size,)``. Batches of ``batch_size / world_size`` taken in
    order from each rank's share together make up the single-process batches, step by step.
    Alone (world size 1) it is ``order`` itself.
    """
    return order[dist.rank :: dist.world_size]


def wrap_model(model: torch.nn.Module, dist: Dist, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """DistributedDataParallel inside a process group (optionally with SyncBatchNorm); else ``model``.

    SyncBatchNorm computes BatchNorm statistics over the global batch instead of each rank's
    share. PyTorch implements it for GPUs only, so it is refused on CPU. The model's parameters
    stay the same objects, so an optimizer built on ``model`` keeps working.
    """
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn and dist.world_size > 1:
        if device.type != "cuda":
            raise LggsegError(
                "sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation); set sync_bn: false"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def all_reduce_sums(values: dict[str, float], dist: Dist) -> dict[str, float]:
    """Sum each value over all ranks (float64). Alone, returns ``values`` unchanged."""
    if not dist.enabled:
        return values
    import torch.distributed as td

    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if td.get_backend() == "nccl":
        tensor = tensor.cuda()
    td.all_reduce(tensor)
    return dict(zip(keys, tensor.cpu().tolist()))


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when ``flag`` is True on at least one (e.g. an interrupt)."""
    if not dist.enabled:
        return flag
    return all_reduce_sums({"flag": float(flag)}, dist)["flag"] > 0


def broadcast_object(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects). Alone, returns ``obj``."""
    if not dist.enabled:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def rank_generator(seed: int, dist: Dist) -> torch.Generator:
    """A CPU generator for this rank's own random draws (augmentation), distinct per rank."""
    return torch.Generator().manual_seed(seed * 65_537 + dist.rank + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(nproc: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` local processes forming one process group.

    Each worker gets the torchrun environment (rank = local rank, rendezvous on 127.0.0.1), so
    ``fn`` behaves exactly as under ``torchrun --standalone --nproc_per_node=nproc``. ``fn`` and
    its arguments must be picklable (module-level functions). An :class:`LggsegError` raised in a
    worker is raised here with its message; other failures propagate as torch's process errors.
    """
    if nproc < 1:
        raise LggsegError(f"--nproc must be >= 1, got {nproc}")
    if launched_by_torchrun():
        raise LggsegError("--nproc starts its own worker processes; do not combine it with torchrun")
    import logging
    import multiprocessing

    import torch.multiprocessing as tmp

    errors = multiprocessing.get_context("spawn").SimpleQueue()
    port = free_port()
    context = tmp.start_processes(
        _worker, args=(nproc, port, errors, fn, args, kwargs), nprocs=nproc, join=False, start_method="spawn"
    )
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # says "Terminating process ..." when a worker fails
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        interrupts = 0
        while True:
            try:
                if context.join():
                    return
            except KeyboardInterrupt:
                # the workers got the same Ctrl-C: they finish the epoch's checkpoint and stop
                interrupts += 1
                if interrupts > 1:
                    raise
    except (tmp.ProcessRaisedException, tmp.ProcessExitedException):
        if not errors.empty():
            raise LggsegError(errors.get()) from None
        raise
    finally:
        spawn_log.setLevel(level)
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def _worker(
    local_rank: int, nproc: int, port: int, errors: Any, fn: Callable[..., Any], args: tuple, kwargs: dict
) -> None:
    """Body of one :func:`launch` worker: set the torchrun variables, run ``fn``, report user errors."""
    os.environ.update(
        RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        fn(*args, **kwargs)
    except LggsegError as exc:
        errors.put(str(exc))
        sys.exit(2)
