"""Distillation across processes started by torchrun (`torchrun --nproc-per-node=N -m edgecompress deploy ...`,
and `--nnodes` with `--rdzv-endpoint` across machines).

Every rank loads the same model and data; rank 0 prunes and sends the pruned structure and weights to the
others (so every rank holds the same student whatever its own pruning would have picked); each step's global
batch (distill.batch_size) is split across the ranks and DistributedDataParallel averages the gradients, so
N processes train the recipe one process trains; only rank 0 writes checkpoints, exports, quantizes, measures
and writes the bundle, and the other ranks wait for it and exit 0. A failure on any rank ends the run of every
rank (torchrun stops the others), and the bundle is published last, in one step, so none is half written."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

from .errors import ProfileError

# rank 0 exports, quantizes and measures (minutes to hours on a remote device) while the others wait in a
# barrier: the process group's timeout must cover that, not the 30 minutes torch defaults to
WAIT_FOR_RANK0 = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    restart: int = 0  # torchrun's elastic restart count (--max-restarts): > 0 continues from the checkpoint
    backend: Optional[str] = None  # gloo | nccl once the process group is up

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def to_dict(self) -> dict:
        return {"world_size": self.size, "backend": self.backend}


_current = World()


def from_env(env=None) -> World:
    """The World torchrun describes in the environment (RANK, LOCAL_RANK, WORLD_SIZE); one process without it."""
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError as exc:
        raise ProfileError(f"torchrun's environment is not numbers: {exc}",
                           hint="start with torchrun, or unset WORLD_SIZE/RANK/LOCAL_RANK") from None
    return World(rank, local, size, restart)


def current() -> World:
    return _current


def start() -> World:
    """Joins the process group torchrun set up, first thing in the run (every rank arrives at about the same time:
    a rank that came to it seconds after the others, still loading its data, was refused by gloo's connect
    retries after an elastic restart here). gloo for CPU tensors, and NCCL for CUDA ones where there is CUDA."""
    global _current
    world = from_env()
    if not world.distributed:
        _current = world
        return world
    import torch
    import torch.distributed as dist

    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=WAIT_FOR_RANK0, **_store_of_this_attempt(world))
    _current = World(world.rank, world.local_rank, world.size, world.restart, backend)
    return _current


def _store_of_this_attempt(world: World) -> dict:
    """torchrun's agent store, its keys prefixed by the restart count. torch reuses that store across elastic
    restarts without a prefix, and a restarted rank then read the gloo address its peer had in the attempt before
    (connection refused, in one restart of three here)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return {}  # env:// as torch does it
    import torch.distributed as dist

    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world.size, is_master=False,
                          timeout=WAIT_FOR_RANK0)
    return {"store": dist.PrefixStore(f"edgecompress/attempt_{world.restart}", agent), "rank": world.rank,
            "world_size": world.size}


def device_for(device: str, world: World) -> str:
    """A rank's own GPU: cuda (or cuda:0 from auto) becomes cuda:LOCAL_RANK under torchrun."""
    if world.distributed and device.startswith("cuda"):
        return f"cuda:{world.local_rank}"
    return device


def broadcast(obj, world: Optional[World] = None):
    """`obj` from rank 0 on every rank (tensors and plain data: the pruned structure, a checkpoint's state).
    Between the run's own processes only: nothing read from a file is unpickled this way."""
    world = world or _current
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: float, world: Optional[World] = None) -> float:
    """The mean of a number over the ranks (the loss the progress line and the curve show)."""
    world = world or _current
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)  # a CPU tensor: gloo carries it
    dist.all_reduce(t)
    return float(t.item()) / world.size


def any_rank(flag: bool, world: Optional[World] = None) -> bool:
    """Whether `flag` holds on any rank: every rank stops at the same step (a budget in minutes, Ctrl-C, SIGTERM
    reach the ranks at different steps, and a rank that stops alone leaves the others waiting in a collective)."""
    world = world or _current
    if not world.distributed:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients_(params, world: Optional[World] = None) -> None:
    """Gradients of parameters DDP does not hold (a feature projection's) averaged over the ranks."""
    world = world or _current
    if not world.distributed:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world.size


def barrier(world: Optional[World] = None) -> None:
    world = world or _current
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    """Leaves the process group (at the end of a run, or after a failure)."""
    global _current
    if _current.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _current = World()


def lost_peer(exc: RuntimeError, world: World, out) -> Exception:
    """A collective that failed because another rank died (its connection reset, a timeout) as a StageError that
    says so and how to go on; any other RuntimeError as it was."""
    text = str(exc)
    if not any(mark in text for mark in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "timed out")):
        return exc
    from .errors import StageError

    first = text.strip().splitlines()[0][:200]
    return StageError("distill", f"torchrun rank {world.rank}: lost contact with another rank ({first})",
                      hint="the rank that stopped first printed its own error above; the last checkpoint in "
                           f"{out}/.<name>.work is kept: the same torchrun command with --resume continues from it "
                           "(torchrun --max-restarts=N restarts the ranks by itself)")


def local_rows(idx, world: Optional[World] = None):
    """This rank's share of a step's global batch: every size-th row from its rank (all ranks together: the batch)."""
    world = world or _current
    return idx[world.rank::world.size] if world.distributed else idx


def check_batch(batch_size: int, world: Optional[World] = None) -> None:
    world = world or _current
    if world.distributed and batch_size % world.size:
        raise ProfileError(f"distill.batch_size={batch_size} does not split evenly over {world.size} processes",
                           hint=f"use a multiple of {world.size} (e.g. --set distill.batch_size="
                                f"{(batch_size // world.size + 1) * world.size}), so N processes train the recipe one does")


def wrap(student, world: Optional[World] = None, device: str = "cpu"):
    """The student in DistributedDataParallel (SyncBatchNorm across GPUs); one process: the student itself."""
    world = world or _current
    if not world.distributed:
        return student
    import torch

    if device.startswith("cuda"):
        kinds = {name: type(m) for name, m in student.named_modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)  # in place below the top module
        student._edgecompress_bn_kinds = kinds
        return torch.nn.parallel.DistributedDataParallel(student, device_ids=[world.local_rank])
    return torch.nn.parallel.DistributedDataParallel(student)


def unsync_batchnorm_(model, kinds: Optional[dict] = None, prefix: str = "") -> None:
    """SyncBatchNorm layers back to the BatchNorm they were (wrap recorded which), sharing the same tensors:
    export and the checkpoints want the user's own layers."""
    import torch

    kinds = getattr(model, "_edgecompress_bn_kinds", {}) if kinds is None else kinds
    for name, child in list(model.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, torch.nn.SyncBatchNorm):
            plain = kinds.get(full, torch.nn.BatchNorm2d)(child.num_features, child.eps, child.momentum, child.affine,
                                                          child.track_running_stats)
            if child.affine:
                plain.weight, plain.bias = child.weight, child.bias
            plain.running_mean, plain.running_var = child.running_mean, child.running_var
            plain.num_batches_tracked = child.num_batches_tracked
            plain.train(child.training)
            setattr(model, name, plain)
        else:
            unsync_batchnorm_(child, kinds, f"{full}.")
    if not prefix and hasattr(model, "_edgecompress_bn_kinds"):
        del model._edgecompress_bn_kinds
