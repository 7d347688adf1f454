"""`fit`: one run from its first (or resumed) epoch to its last or to early stopping, with AdamW and class-
weighted CE, through the callbacks that log each epoch and keep the best model and the resume state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stages.lib.data.dataset import CachedSplit, class_weights
from stages.lib.model import distributed
from stages.lib.model.rng import rng_state, set_rng_state
from stages.lib.model.runtime import channels_last, precision
from stages.lib.model.training import EpochResult, make_optimizer, make_scheduler, train_one_epoch, validate
from stages.lib.params.schema import Train


@dataclass
class Progress:
    """Where training stands after an epoch; part of the resume checkpoint."""

    epoch: int = 0  # last completed epoch
    best_epoch: int = 0
    best_val_macro_f1: float = -1.0
    stale: int = 0  # epochs since the last val macro-F1 gain
    finished: bool = False


@dataclass
class _Parts:
    """What one run trains with besides the model: loss, optimizer, schedule and mixed precision."""

    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    autocast: object
    scaler: object

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }


def _setup(model: nn.Module, train_set: CachedSplit, t: Train, device: torch.device) -> _Parts:
    """The model on its device (channels_last where it pays) and the run's parts."""
    model.to(device)
    if channels_last(device):
        model.to(memory_format=torch.channels_last)
    weights = torch.as_tensor(
        class_weights(train_set.labels, len(train_set.classes)), dtype=torch.float32, device=device
    )
    optimizer = make_optimizer(model, t, device)
    return _Parts(
        nn.CrossEntropyLoss(weight=weights), optimizer, make_scheduler(optimizer, t), *precision(t.precision, device)
    )


def _restore(resume: dict, model: nn.Module, parts: _Parts, train_loader: DataLoader, seed: int) -> Progress:
    """Everything a killed run saved after its last whole epoch, back in place; its progress."""
    model.load_state_dict(resume["model"])
    parts.optimizer.load_state_dict(resume["optimizer"])
    parts.scheduler.load_state_dict(resume["scheduler"])
    parts.scaler.load_state_dict(resume["scaler"])
    set_rng_state(resume["rng"], train_loader)
    progress = Progress(**resume["progress"])
    if distributed.rank() > 0:  # the checkpoint holds rank 0's augmentation RNGs only
        train_loader.dataset.augment.set_random_seed(seed + distributed.rank() + 7919 * progress.epoch)
    return progress


def _log_epoch(
    on_epoch: Callable[[dict], None], label: str, epoch: int, lr: float, tr: EpochResult, val: EpochResult
) -> None:
    """One epoch's row for DVCLive and its line on the terminal; `label` is "<run> epoch <e>/<epochs>"."""
    images_per_s = tr.n / tr.seconds
    on_epoch(
        {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tr.loss,
            "train_macro_f1": tr.macro_f1,
            "train_accuracy": tr.accuracy,
            "train_images_per_s": images_per_s,
            "train_first_batch_s": tr.first_batch_s,
            "val_loss": val.loss,
            "val_macro_f1": val.macro_f1,
            "val_accuracy": val.accuracy,
        }
    )
    tqdm.write(
        f"{label}: train loss {tr.loss:.4f} F1 {tr.macro_f1:.4f} | "
        f"val loss {val.loss:.4f} F1 {val.macro_f1:.4f} acc {val.accuracy:.4f} | lr {lr:.2e} | "
        f"{tr.n} images, {images_per_s:.0f} img/s, first batch after {tr.first_batch_s:.2f} s"
    )


def _advance(progress: Progress, epoch: int, score: float, t: Train) -> bool:
    """Count the epoch into `progress` (best score, epochs without improvement, finished); whether it improved."""
    progress.epoch = epoch
    improved = score > progress.best_val_macro_f1
    if improved:
        progress.best_epoch, progress.best_val_macro_f1, progress.stale = epoch, score, 0
    else:
        progress.stale += 1
    progress.finished = progress.stale >= t.early_stopping_patience or epoch == t.epochs
    return improved


def _forward_net(model: nn.Module, device: torch.device, t: Train) -> nn.Module:
    """What the forward passes go through: `model` (whose weights are read and saved) with DDP's gradient
    averaging and, when asked, torch.compile's fused kernels. After a restore: DDP broadcasts rank 0's weights."""
    net = distributed.wrap(model, device)
    return torch.compile(net) if t.compile else net


# params: the loop's inputs (model, loaders, params, device, run name, seed) and, as keywords with
# defaults, the resume state and three callbacks, so training_run.py and the tests pass only what they use.
def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    t: Train,
    device: torch.device,
    name: str,
    seed: int,
    resume: dict | None = None,
    on_epoch: Callable[[dict], None] = lambda row: None,
    on_best: Callable[[nn.Module, int, float], None] = lambda model, epoch, score: None,
    on_checkpoint: Callable[[dict], None] = lambda state: None,
) -> Progress:
    """Train with AdamW and class-weighted CE, early-stop on val macro-F1; `t` is params' `train`,
    `seed` the run's (one of params' `seeds`).

    `on_epoch` receives each epoch's metrics row (for DVCLive); `on_best` is called whenever val
    macro-F1 improves, so the best checkpoint is on disk as soon as it exists; `on_checkpoint`
    receives, after every epoch, everything needed to continue (`resume`) exactly where it stopped.
    """
    parts = _setup(model, train_loader.dataset, t, device)
    progress = Progress() if resume is None else _restore(resume, model, parts, train_loader, seed)
    main = distributed.is_main()
    net = _forward_net(model, device, t)
    for epoch in range(progress.epoch + 1, t.epochs + 1):
        lr, label = parts.optimizer.param_groups[0]["lr"], f"{name} epoch {epoch}/{t.epochs}"
        tr = train_one_epoch(
            net, train_loader, parts.criterion, parts.optimizer, parts.scaler, device, parts.autocast, desc=label
        )
        distributed.broadcast_buffers(model)  # val scores the weights rank 0 saves, BatchNorm stats included
        val = validate(model, val_loader, device, parts.autocast, parts.criterion)
        if main:
            _log_epoch(on_epoch, label, epoch, lr, tr, val)
        if _advance(progress, epoch, val.macro_f1, t) and main:
            on_best(model, epoch, val.macro_f1)
        if t.scheduler == "plateau":
            parts.scheduler.step(val.macro_f1)
        else:
            parts.scheduler.step()
        if main:
            on_checkpoint(
                {
                    "model": model.state_dict(),
                    **parts.state(),
                    "progress": asdict(progress),
                    "rng": rng_state(train_loader),
                }
            )
        if progress.stale >= t.early_stopping_patience:
            if main:
                tqdm.write(
                    f"{name}: early stop at epoch {epoch}, best val macro-F1 "
                    f"{progress.best_val_macro_f1:.4f} at epoch {progress.best_epoch}"
                )
            break
    return progress
