"""The training loop: one epoch of training, one pass of prediction, and `fit` around them.

Train metrics come from the training pass itself (predictions on the augmented, resampled
batches), not from a second inference pass over the training set as the study did: that pass cost
a third of the compute and measures the same thing less honestly.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stages.lib.data import CachedSplit, balanced_sampler, class_weights
from stages.lib.io import atomic_path
from stages.lib.metrics import macro_f1
from stages.lib.transforms import to_model_input, train_augment


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    macro_f1: float
    n: int


@dataclass
class FitResult:
    best_epoch: int
    best_val_macro_f1: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_workers(setting, device: torch.device) -> int:
    """`auto`: no workers on CPU (they would steal the cores the model needs), else up to 8."""
    if setting != "auto":
        return int(setting)
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def _seed_worker_augment(_worker_id: int) -> None:
    # torch gives each worker a distinct seed derived from the loader's seeded generator;
    # albumentations keeps its own RNG, so hand that seed on or every worker repeats the others.
    info = torch.utils.data.get_worker_info()
    if info.dataset.augment is not None:
        info.dataset.augment.set_random_seed(torch.initial_seed() % 2**32)


def make_loaders(cache_dir: str, t: dict, augment: dict, device: torch.device) -> tuple[DataLoader, DataLoader]:
    """Class-balanced, augmented train loader and a plain val loader over the cache."""
    seed = int(t["seed"])
    train_set = CachedSplit(cache_dir, "train", augment=train_augment(augment, seed=seed))
    val_set = CachedSplit(cache_dir, "val")
    workers = resolve_workers(t["num_workers"], device)
    common = dict(
        batch_size=int(t["batch_size"]), num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, worker_init_fn=_seed_worker_augment if workers else None,
    )
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, sampler=balanced_sampler(train_set.labels, generator),
                              generator=generator, **common)
    val_loader = DataLoader(val_set, shuffle=False, **common)
    return train_loader, val_loader


def amp_context(device: torch.device, amp: bool):
    """fp16 autocast on CUDA when asked (the study's AMP); plain fp32 elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def train_one_epoch(model, loader, criterion, optimizer, scaler, device, amp: bool, desc: str) -> EpochResult:
    model.train()
    total_loss, preds, labels = 0.0, [], []
    bar = tqdm(loader, desc=desc, unit="batch", mininterval=1.0, leave=False, disable=None)
    for x, y in bar:
        x = to_model_input(x, device, channels_last=device.type == "cuda")
        y = y.to(device, non_blocking=True)
        with amp_context(device, amp):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(y)
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return _epoch_result(total_loss, torch.cat(labels).numpy(), torch.cat(preds).numpy())


@torch.no_grad()
def predict(model, loader, device, amp: bool = False, criterion=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities [N, C], labels [N] and mean loss (nan without a criterion)."""
    model.eval()
    probs, labels, total_loss = [], [], 0.0
    for x, y in loader:
        x = to_model_input(x, device, channels_last=device.type == "cuda")
        y = y.to(device, non_blocking=True)
        with amp_context(device, amp):
            logits = model(x)
        if criterion is not None:
            total_loss += criterion(logits.float(), y).item() * len(y)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        labels.append(y.cpu())
    labels = torch.cat(labels).numpy()
    return torch.cat(probs).numpy(), labels, (total_loss / len(labels) if criterion is not None else float("nan"))


def _epoch_result(total_loss: float, y_true: np.ndarray, y_pred: np.ndarray) -> EpochResult:
    return EpochResult(
        loss=total_loss / len(y_true), accuracy=float((y_true == y_pred).mean()),
        macro_f1=macro_f1(y_true, y_pred), n=len(y_true),
    )


def make_scheduler(optimizer, t: dict):
    """ReduceLROnPlateau on val macro-F1 (the study's default) or cosine annealing."""
    if t["scheduler"] == "plateau":
        pl = t["plateau"]
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=pl["factor"], patience=pl["patience"], min_lr=t["min_lr"])
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(t["epochs"]), eta_min=t["min_lr"])


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    t: dict,
    device: torch.device,
    name: str,
    on_epoch: Callable[[dict], None] = lambda row: None,
    on_best: Callable[[nn.Module, int, float], None] = lambda model, epoch, score: None,
) -> FitResult:
    """Train with AdamW and class-weighted CE, early-stop on val macro-F1; `t` is params' `train`.

    `on_epoch` receives each epoch's metrics row (for DVCLive); `on_best` is called whenever val
    macro-F1 improves, so the best checkpoint is on disk as soon as it exists.
    """
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    weights = torch.as_tensor(class_weights(train_loader.dataset.labels), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
    scheduler = make_scheduler(optimizer, t)
    amp = bool(t["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    epochs, patience = int(t["epochs"]), int(t["early_stopping_patience"])

    result = FitResult(best_epoch=0, best_val_macro_f1=-1.0, epochs_run=0)
    stale = 0
    for epoch in range(1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, train_loader, criterion, optimizer, scaler, device, amp,
                             desc=f"{name} epoch {epoch}/{epochs}")
        probs, labels, val_loss = predict(model, val_loader, device, amp, criterion)
        preds = probs.argmax(1)
        val = _epoch_result(val_loss * len(labels), labels, preds)
        row = {"epoch": epoch, "lr": lr,
               "train_loss": tr.loss, "train_macro_f1": tr.macro_f1, "train_accuracy": tr.accuracy,
               "val_loss": val.loss, "val_macro_f1": val.macro_f1, "val_accuracy": val.accuracy}
        result.history.append(row)
        result.epochs_run = epoch
        on_epoch(row)
        tqdm.write(f"{name} epoch {epoch}/{epochs}: train loss {tr.loss:.4f} F1 {tr.macro_f1:.4f} | "
                   f"val loss {val.loss:.4f} F1 {val.macro_f1:.4f} acc {val.accuracy:.4f} | lr {lr:.2e}")

        if val.macro_f1 > result.best_val_macro_f1:
            result.best_epoch, result.best_val_macro_f1, stale = epoch, val.macro_f1, 0
            on_best(model, epoch, val.macro_f1)
        else:
            stale += 1
        if t["scheduler"] == "plateau":
            scheduler.step(val.macro_f1)
        else:
            scheduler.step()
        if stale >= patience:
            tqdm.write(f"{name}: early stop at epoch {epoch}, best val macro-F1 {result.best_val_macro_f1:.4f} "
                       f"at epoch {result.best_epoch}")
            break
    return result


# --- checkpoints -------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Weights plus plain metadata, loadable with torch.load(weights_only=True)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": copy.deepcopy(meta)}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    from stages.lib.errors import UserError

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
