"""Data-parallel training with PyTorch's own engine: torchrun launches, DDP averages gradients.

The train stage runs unchanged as one process or as one of N under `torchrun`. When
`train.nproc` > 1 and the stage was not started by torchrun, it re-launches itself through
`torch.distributed.run`, so the `cmd` in dvc.yaml stays the same. Every rank reads the same
params and draws the same seeded class-balanced stream, takes every N-th index of it, and joins
its predictions with the others' before any metric is computed, so all ranks take the same
scheduler and early-stopping decisions. Only rank 0 writes files.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(nproc: int, module: str, argv: Sequence[str]) -> int:
    """Run `python -m module argv` as `nproc` processes on this machine; returns their exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *argv,
    ]
    return subprocess.call(cmd)


def die_with_launcher() -> None:
    """Have Linux SIGKILL this rank when its torchrun agent dies.

    torchrun starts each rank in a session of its own, so a SIGKILL to `dvc repro`'s process group
    (a kill, the OOM killer) would otherwise leave the ranks training, and writing, unsupervised.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the agent died before the request took effect
        os._exit(1)


def init() -> torch.device:
    """Join the process group when started by torchrun (nccl on CUDA, gloo on CPU); the device to use."""
    cuda = torch.cuda.is_available()
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return torch.device("cuda" if cuda else "cpu")
    die_with_launcher()
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_world_size() -> int:
    """Processes sharing this machine's CPU cores (torchrun sets it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when there are several ranks, else `model` itself."""
    if world_size() == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


class RankShard(Sampler[int]):
    """Rank r's share of another sampler's stream: indices r, r + N, r + 2N, ...

    Every rank draws the whole stream from the same seeded generator, so the shares are disjoint
    and together are exactly the single-process stream. The stream is padded with its own first
    indices to a multiple of N, because DDP needs the same number of batches on every rank.
    """

    def __init__(self, sampler: Sampler[int], rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.world_size)

    def __iter__(self) -> Iterator[int]:
        stream = list(self.sampler)
        stream += stream[: len(self) * self.world_size - len(stream)]
        return iter(stream[self.rank :: self.world_size])


def gather(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each array concatenated over the ranks (rank order); the arrays themselves on one process."""
    if world_size() == 1:
        return arrays
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))
