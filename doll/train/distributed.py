"""torchrun / DDP glue: rank and world size from the environment, gather, barrier."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

# How long ranks wait for each other in one collective. NCCL's default (10 min) is shorter
# than rank 0's assembly of a CheXpert-sized label file while the others wait at a barrier.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("DOLL_DIST_TIMEOUT_MIN", "120")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); return this rank's
    device: under torchrun, ``cuda`` or ``cuda:N`` means this rank's GPU, ``cuda:LOCAL_RANK``,
    on every call (a stage and each engine it starts call this)."""
    if world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group at the end of a command that succeeded: wait for every rank,
    then destroy the group. Left to the interpreter's exit, ranks tear their gloo/NCCL
    threads down in any order, and a rank whose work was done could still abort (SIGABRT,
    "terminate called without an active exception", seen once in CI under gloo), failing
    the whole torchrun job. The CLI calls this; call it at the end of your own script when
    you drive the stages from Python under torchrun."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def gather_objects(obj):
    """List of ``obj`` from every rank (just ``[obj]`` without DDP)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
