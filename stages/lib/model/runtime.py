"""Where a stage runs: seeding, device, compute dtype, DataLoader workers, and the one line that
says so at the start of train and evaluate (also stored in the checkpoint and DVCLive summary),
so a GPU config that silently fell back to CPU shows at once; and the rule mixed precision is held
to: whether it gives fp32's predictions.

A film agrees when both precisions pick the same class and none of its class probabilities moves by
more than `MAX_PROB_DIFF`; the precision passes when at least `MIN_AGREEING` of the films agree."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stages import CPU_PINS
from stages.lib.core.errors import UserError
from stages.lib.model import distributed

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MIN_AGREEING = 0.995
MAX_PROB_DIFF = 0.01


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG; `deterministic` also forbids the GPU kernels that vary run to run.

    On CPU the run is reproducible either way. On CUDA, cuDNN autotuning (on unless
    deterministic) and atomics in some backward kernels make the last digits vary.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def autotuned(device: torch.device) -> bool:
    """Whether cuDNN picks each convolution's kernels by timing them (cudnn.benchmark, on unless
    deterministic): once per new input shape, and with bf16/channels_last that can take seconds per
    shape, so the loops keep one batch shape where they can."""
    return device.type == "cuda" and torch.backends.cudnn.benchmark


def use_threads(threads: int | None) -> int:
    """Set `train.threads`, the CPU threads torch (and the MKL and oneDNN it calls) computes with, before the
    stage computes anything; None keeps torch's default. A CPU result depends on it (it sets how a sum is
    split and added), so it is a param: `make demo` and `cd demo && dvc repro` give the same numbers whatever
    the shell's OMP_NUM_THREADS says. Returns the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux): a CPU result is that machine's (docs/design.md)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def channels_last(device: torch.device) -> bool:
    """NHWC tensors: faster convolutions on CUDA tensor cores, slower on CPU."""
    return device.type == "cuda"


def resolve_workers(setting: int | str, device: torch.device) -> int:
    """`auto`: no workers on CPU (they would steal the cores the model needs), else up to 8 per
    process, sharing the machine's cores with the other processes training on it."""
    if setting != "auto":
        return setting
    cores = (os.cpu_count() or 1) // distributed.local_world_size()
    return 0 if device.type == "cpu" else max(1, min(8, cores))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for `train.precision` on CUDA (`auto`: bf16 where the GPU has it, else
    fp16); fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(f"train.precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use auto or fp16")
    return DTYPES[precision]


def precision(setting: str, device: torch.device):
    """(autocast context, GradScaler) for `train.precision`; only fp16 needs the scaler."""
    dtype = autocast_dtype(setting, device)
    ctx = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    return ctx, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@dataclass(frozen=True)
class Runtime:
    device: str
    device_name: str
    precision: str  # the dtype computed in
    channels_last: bool
    workers: int
    threads: int  # CPU threads torch computes with (train.threads)
    cpu: str  # the CPU's model, and the kernels it was held to (stages/__init__.py)
    torch: str
    cuda: str | None  # the CUDA version torch was built with (None: a CPU-only build)
    note: str | None = None  # why the precision is not the one params asked for

    def line(self) -> str:
        asked = f" ({self.note})" if self.note else ""
        return (
            f"runs on {self.device} ({self.device_name}) | precision {self.precision}{asked} | "
            f"channels_last {'on' if self.channels_last else 'off'} | {self.workers} DataLoader workers | "
            f"{self.threads} CPU threads ({self.cpu}) | "
            f"torch {self.torch}, CUDA {self.cuda or 'none'}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def describe(device: torch.device, asked: str, workers: int) -> Runtime:
    """What a stage computes with; `asked` is train.precision (evaluate asks for fp32)."""
    dtype = autocast_dtype(asked, device)
    name = next(k for k, v in DTYPES.items() if v == dtype)
    note = None
    if device.type != "cuda" and asked != "fp32":
        note = f"train.precision {asked} asks for mixed precision, which needs CUDA; none is visible"
    elif asked == "auto":
        note = "auto"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"no CUDA device, {os.cpu_count()} cores"
    return Runtime(
        str(device),
        gpu,
        name,
        channels_last(device),
        workers,
        torch.get_num_threads(),
        f"{cpu_model()}, kernels " + " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in CPU_PINS),
        str(torch.__version__),
        torch.version.cuda,
        note,
    )


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """`reference` (fp32) and `other` probabilities [N, C] of the same films, in the same order."""
    if reference.shape != other.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(f"need two [N, C] probability arrays of one shape, got {reference.shape} and {other.shape}")
    same_class = reference.argmax(1) == other.argmax(1)
    film_diff = np.abs(reference - other).max(1)
    agreeing = same_class & (film_diff <= MAX_PROB_DIFF)
    return {
        "films": len(reference),
        "same_class": round(float(same_class.mean()), 4),
        "agreeing": round(float(agreeing.mean()), 4),
        "max_prob_diff": round(float(film_diff.max()), 5),
        "ok": bool(agreeing.mean() >= MIN_AGREEING),
    }
