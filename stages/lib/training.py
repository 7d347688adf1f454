"""The training loop: one epoch of training, one pass of prediction, and `fit` around them.

Train metrics come from the training pass itself (predictions on the augmented, resampled
batches), not from a second inference pass over the training set as the study did: that pass cost
a third of the compute and measures the same thing less honestly.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stages.lib import distributed
from stages.lib.data import CachedSplit, balanced_sampler, class_weights
from stages.lib.errors import UserError
from stages.lib.io import atomic_path
from stages.lib.metrics import macro_f1
from stages.lib.transforms import to_model_input, train_augment


MAX_NON_FINITE_FP16 = 5
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    macro_f1: float
    n: int
    seconds: float = float("nan")


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


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_workers(setting, device: torch.device) -> int:
    """`auto`: no workers on CPU (they would steal the cores the model needs), else up to 8 per
    process, sharing the machine's cores with the other processes training on it."""
    if setting != "auto":
        return int(setting)
    cores = (os.cpu_count() or 1) // distributed.local_world_size()
    return 0 if device.type == "cpu" else max(1, min(8, cores))


def _seed_worker_augment(_worker_id: int) -> None:
    # torch gives each worker a distinct seed derived from the loader's seeded generator;
    # albumentations keeps its own RNG, so hand that seed on or every worker repeats the others.
    info = torch.utils.data.get_worker_info()
    if info.dataset.augment is not None:
        info.dataset.augment.set_random_seed(torch.initial_seed() % 2**32)


def make_loaders(cache_dir: str, t: dict, augment: dict, device: torch.device) -> tuple[DataLoader, DataLoader]:
    """Class-balanced, augmented train loader and a plain val loader over the cache.

    Under DDP each rank gets every N-th index of the shared sampled stream and of the val set;
    the augmentations are seeded per rank so the ranks do not draw identical transforms.
    """
    seed, rank, world = int(t["seed"]), distributed.rank(), distributed.world_size()
    train_set = CachedSplit(cache_dir, "train", augment=train_augment(augment, seed=seed + rank))
    val_set = CachedSplit(cache_dir, "val")
    workers = resolve_workers(t["num_workers"], device)
    common = dict(
        batch_size=int(t["batch_size"]), num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, worker_init_fn=_seed_worker_augment if workers else None,
    )
    generator = torch.Generator().manual_seed(seed)  # the same on every rank: one shared stream
    sampler = balanced_sampler(train_set.labels, generator)
    if world > 1:
        sampler = distributed.RankShard(sampler, rank, world)
    train_loader = DataLoader(train_set, sampler=sampler, generator=generator, **common)
    val_loader = DataLoader(val_set, sampler=range(rank, len(val_set), world), **common)
    return train_loader, val_loader


def autocast_dtype(precision: str, amp: bool, device: torch.device) -> torch.dtype:
    """The compute dtype: `train.precision` on CUDA (`auto`: bf16 where the GPU has it, else
    fp16), fp32 on CPU or when `train.amp` is false."""
    if not amp or device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(f"train.precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use auto or fp16")
    return PRECISIONS[precision]


def precision(t: dict, device: torch.device):
    """(autocast context, GradScaler) for params' `train`; only fp16 needs the scaler."""
    dtype = autocast_dtype(t.get("precision", "auto"), bool(t["amp"]), device)
    ctx = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    return ctx, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def train_one_epoch(model, loader, criterion, optimizer, scaler, device, autocast, desc: str) -> EpochResult:
    """One pass over `loader`; loss, accuracy and macro-F1 are over all ranks' batches."""
    model.train()
    total_loss, preds, labels, non_finite = 0.0, [], [], 0
    bar = tqdm(loader, desc=desc, unit="batch", mininterval=1.0, leave=False,
               disable=None if distributed.is_main() else True)
    start = time.perf_counter()
    for batch, (x, y) in enumerate(bar, start=1):
        x = to_model_input(x, device, channels_last=device.type == "cuda")
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # with fp16, skips the step when the gradients overflowed
        scaler.update()
        value = loss.item()
        # fp16 gets a few batches for the GradScaler to lower its scale; fp32 none.
        non_finite = non_finite + 1 if not math.isfinite(value) else 0
        if non_finite > (MAX_NON_FINITE_FP16 if scaler.is_enabled() else 0):
            raise UserError(f"{desc}, batch {batch}: the loss is {value}; training diverged. "
                            f"Lower train.lr, or check the data for blank or corrupt images")
        total_loss += value * len(y)
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
        bar.set_postfix(loss=f"{value:.3f}")
    seconds = time.perf_counter() - start  # loss.item() above waited for the device each batch
    losses, y_true, y_pred = distributed.gather(np.array([total_loss]), torch.cat(labels).numpy(),
                                                torch.cat(preds).numpy())
    return _epoch_result(losses.sum(), y_true, y_pred, seconds)


@torch.no_grad()
def predict(model, loader, device, autocast=contextlib.nullcontext(), criterion=None,
            hflip: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities [N, C], labels [N] and mean loss (nan without a criterion).

    `hflip` averages the probabilities of each image and its mirror (test-time augmentation).
    """
    model.eval()
    probs, labels, total_loss = [], [], 0.0
    for x, y in loader:
        x = to_model_input(x, device, channels_last=device.type == "cuda")
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
            mirrored = model(x.flip(-1)) if hflip else None
        if criterion is not None:
            total_loss += criterion(logits.float(), y).item() * len(y)
        p = torch.softmax(logits.float(), 1)
        if mirrored is not None:
            p = (p + torch.softmax(mirrored.float(), 1)) / 2
        probs.append(p.cpu())
        labels.append(y.cpu())
    labels = torch.cat(labels).numpy()
    return torch.cat(probs).numpy(), labels, (total_loss / len(labels) if criterion is not None else float("nan"))


def _epoch_result(total_loss: float, y_true: np.ndarray, y_pred: np.ndarray, seconds: float = float("nan")) -> EpochResult:
    return EpochResult(
        loss=float(total_loss) / len(y_true), accuracy=float((y_true == y_pred).mean()),
        macro_f1=macro_f1(y_true, y_pred), n=len(y_true), seconds=seconds,
    )


def validate(model, loader, device, autocast, criterion) -> EpochResult:
    """Val metrics over the whole val set: each rank scores its share, the shares are joined."""
    probs, labels, mean_loss = predict(model, loader, device, autocast, criterion)
    losses, labels, preds = distributed.gather(np.array([mean_loss * len(labels)]), labels, probs.argmax(1))
    return _epoch_result(losses.sum(), labels, preds)


def make_scheduler(optimizer, t: dict):
    """ReduceLROnPlateau on val macro-F1 (the study's default) or cosine annealing."""
    if t["scheduler"] == "plateau":
        pl = t["plateau"]
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=pl["factor"], patience=pl["patience"], min_lr=t["min_lr"])
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(t["epochs"]), eta_min=t["min_lr"])


@dataclass
class Progress:
    """Where training stands after an epoch; part of the resume checkpoint."""
    epoch: int = 0  # last completed epoch
    best_epoch: int = 0
    best_val_macro_f1: float = -1.0
    stale: int = 0  # epochs since the last val macro-F1 gain
    finished: bool = False


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    t: dict,
    device: torch.device,
    name: str,
    resume: dict | None = None,
    on_epoch: Callable[[dict], None] = lambda row: None,
    on_best: Callable[[nn.Module, int, float], None] = lambda model, epoch, score: None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
) -> Progress:
    """Train with AdamW and class-weighted CE, early-stop on val macro-F1; `t` is params' `train`.

    `on_epoch` receives each epoch's metrics row (for DVCLive); `on_best` is called whenever val
    macro-F1 improves, so the best checkpoint is on disk as soon as it exists; `on_checkpoint`
    receives, after every epoch, everything needed to continue (`resume`) exactly where it stopped.
    """
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    weights = torch.as_tensor(class_weights(train_loader.dataset.labels), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
    scheduler = make_scheduler(optimizer, t)
    autocast, scaler = precision(t, device)
    epochs, patience = int(t["epochs"]), int(t["early_stopping_patience"])
    main = distributed.is_main()

    progress = Progress()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"], train_loader)
        progress = Progress(**resume["progress"])
        if distributed.rank() > 0:  # the checkpoint holds rank 0's augmentation RNGs only
            train_loader.dataset.augment.set_random_seed(int(t["seed"]) + distributed.rank() + 7919 * progress.epoch)

    # Weights are read and saved through `model`; the forward passes go through `net`, which adds
    # DDP's gradient averaging and, when asked, torch.compile's fused kernels.
    net = distributed.wrap(model, device)
    if t.get("compile", False):
        net = torch.compile(net)

    for epoch in range(progress.epoch + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(net, train_loader, criterion, optimizer, scaler, device, autocast,
                             desc=f"{name} epoch {epoch}/{epochs}")
        distributed.broadcast_buffers(model)  # val scores the weights rank 0 saves, BatchNorm stats included
        val = validate(model, val_loader, device, autocast, criterion)
        images_per_s = tr.n / tr.seconds
        if main:
            on_epoch({"epoch": epoch, "lr": lr,
                      "train_loss": tr.loss, "train_macro_f1": tr.macro_f1, "train_accuracy": tr.accuracy,
                      "train_images_per_s": images_per_s,
                      "val_loss": val.loss, "val_macro_f1": val.macro_f1, "val_accuracy": val.accuracy})
            tqdm.write(f"{name} epoch {epoch}/{epochs}: train loss {tr.loss:.4f} F1 {tr.macro_f1:.4f} | "
                       f"val loss {val.loss:.4f} F1 {val.macro_f1:.4f} acc {val.accuracy:.4f} | lr {lr:.2e} | "
                       f"{tr.n} images, {images_per_s:.0f} img/s")

        progress.epoch = epoch
        if val.macro_f1 > progress.best_val_macro_f1:
            progress.best_epoch, progress.best_val_macro_f1, progress.stale = epoch, val.macro_f1, 0
            if main:
                on_best(model, epoch, val.macro_f1)
        else:
            progress.stale += 1
        if t["scheduler"] == "plateau":
            scheduler.step(val.macro_f1)
        else:
            scheduler.step()
        progress.finished = progress.stale >= patience or epoch == epochs
        if main:
            on_checkpoint({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "progress": asdict(progress), "rng": rng_state(train_loader),
            })
        if progress.stale >= patience:
            if main:
                tqdm.write(f"{name}: early stop at epoch {epoch}, best val macro-F1 "
                           f"{progress.best_val_macro_f1:.4f} at epoch {progress.best_epoch}")
            break
    return progress


# --- random state: everything a resumed run needs to draw what the uninterrupted run drew -------

def _augment_rngs(loader: DataLoader) -> list:
    augment = loader.dataset.augment
    return [augment, *augment.transforms] if augment is not None else []


def rng_state(loader: DataLoader) -> dict:
    """Python, NumPy, torch (CPU, CUDA), the sampler's generator and the augmentation RNGs.

    Plain types and tensors only, so the checkpoint loads with weights_only=True. (With DataLoader
    workers the augmentations run in the workers, whose RNGs are not captured: see the README.)
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": loader.generator.get_state(),
        "augment": [(a.random_generator.bit_generator.state, a.py_random.getstate()) for a in _augment_rngs(loader)],
    }


def set_rng_state(state: dict, loader: DataLoader) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader.generator.set_state(state["sampler"])
    for a, (np_state, py_state) in zip(_augment_rngs(loader), state["augment"]):
        a.random_generator.bit_generator.state = np_state
        a.py_random.setstate(py_state)


# --- checkpoints -------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Weights plus plain metadata, loadable with torch.load(weights_only=True)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": copy.deepcopy(meta)}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise UserError(f"{path} not found; train it first (dvc repro train)") from err
    except Exception as err:
        raise UserError(f"{path} is not a checkpoint written by the train stage ({err.__class__.__name__}); "
                        f"retrain it (dvc repro --force train)") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "meta" not in ckpt:
        raise UserError(f"{path} lacks state_dict/meta; retrain it with this version of the train stage")
    return ckpt
