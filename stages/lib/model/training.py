"""The training loop: the loaders, one epoch of training, validation, and `fit` around them: one run from its
first (or resumed) epoch to its last or to early stopping, with AdamW and class-weighted CE, through the
callbacks that log each epoch and keep the best model and the resume state.

Train metrics come from the training pass itself (predictions on the augmented, resampled
batches), not from a second inference pass over the training set as the study did: that pass cost
a third of the compute and measures the same thing less honestly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stages.lib.core.errors import UserError
from stages.lib.data.dataset import CachedSplit, balanced_sampler, class_weights
from stages.lib.data.transforms import to_model_input, train_augment
from stages.lib.model import distributed
from stages.lib.model.inference import predict
from stages.lib.model.resume import rng_state, set_rng_state
from stages.lib.model.runtime import autotuned, channels_last, precision, resolve_workers
from stages.lib.params.schema import Augment, Train
from stages.lib.results.metrics import macro_f1

MAX_NON_FINITE_FP16 = 5


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    macro_f1: float
    n: int
    seconds: float = float("nan")
    first_batch_s: float = float("nan")  # how long the pass waited for its first batch


def _seed_worker_augment(_worker_id: int) -> None:
    # torch gives each worker a distinct seed derived from the loader's seeded generator;
    # albumentations keeps its own RNG, so hand that seed on or every worker repeats the others.
    info = torch.utils.data.get_worker_info()
    if info.dataset.augment is not None:
        info.dataset.augment.set_random_seed(torch.initial_seed() % 2**32)


class EpochLoader(DataLoader):
    """A DataLoader that draws the same random numbers whatever its number of workers.

    Each fresh iterator draws a base seed from the loader's generator, which the sampler shares.
    Persistent workers reuse one iterator, so from the second epoch on they would skip that draw
    and sample other images than 0 workers do (and a resumed run other images than an
    uninterrupted one); the draw is made here instead.
    """

    def __iter__(self):
        if self._iterator is not None:  # persistent workers: the iterator is reused
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return super().__iter__()


def make_loaders(
    cache_dir: str, t: Train, augment: Augment, device: torch.device, seed: int
) -> tuple[DataLoader, DataLoader]:
    """Class-balanced, augmented train loader and a plain val loader over the cache; `seed` is the run's.

    Under DDP each rank gets every N-th index of the shared sampled stream and of the val set;
    the augmentations are seeded per rank so the ranks do not draw identical transforms.
    """
    rank, world = distributed.rank(), distributed.world_size()
    train_set = CachedSplit(cache_dir, "train", augment=train_augment(augment, seed=seed + rank))
    val_set = CachedSplit(cache_dir, "val")
    workers = resolve_workers(t.num_workers, device)
    common = dict(
        batch_size=t.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker_augment if workers else None,
    )
    generator = torch.Generator().manual_seed(seed)  # the same on every rank: one shared stream
    sampler = balanced_sampler(train_set.labels, generator)
    if world > 1:
        sampler = distributed.RankShard(sampler, rank, world)
    # Where cuDNN autotunes, each new batch shape is tuned again: the last partial batch is dropped
    # (the sampler draws with replacement, so no image is left out for good). CPU runs keep it.
    train_loader = EpochLoader(train_set, sampler=sampler, generator=generator, drop_last=autotuned(device), **common)
    if len(train_loader) == 0:  # only with drop_last: fewer draws per process than one batch
        raise UserError(
            f"train.batch_size {t.batch_size} exceeds the {len(sampler)} training images each process "
            f"draws per epoch; lower it (or train.nproc)"
        )
    val_loader = EpochLoader(val_set, sampler=range(rank, len(val_set), world), **common)
    return train_loader, val_loader


# params: the step's objects as torchvision's reference train_one_epoch takes them (model, loader, loss,
# optimizer, scaler, device, autocast) and the progress label.
def train_one_epoch(model, loader, criterion, optimizer, scaler, device, autocast, desc: str) -> EpochResult:
    """One pass over `loader`; loss, accuracy and macro-F1 are over all ranks' batches.

    Nothing is read back from the device until the pass ends, so the GPU never waits for Python:
    the summed loss, predictions and labels stay there, and so does the non-finite-loss watch (fp16
    gets a few batches in a row for the GradScaler to lower its scale; bf16 and fp32 none), which is
    read once, at the end of the pass.
    """
    model.train()
    allowed = MAX_NON_FINITE_FP16 if scaler.is_enabled() else 0
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    streak = torch.zeros((), dtype=torch.int64, device=device)  # non-finite losses in a row
    first_bad = torch.zeros((), dtype=torch.int64, device=device)  # batch where the streak first went over
    bad_loss = torch.zeros((), dtype=torch.float32, device=device)
    preds, labels = [], []
    bar = tqdm(
        loader, desc=desc, unit="batch", mininterval=1.0, leave=False, disable=None if distributed.is_main() else True
    )
    start = time.perf_counter()
    first_batch_s = float("nan")
    for batch, (x, y) in enumerate(bar, start=1):
        if batch == 1:
            first_batch_s = time.perf_counter() - start  # workers starting, or the prefetch refilling
        x = to_model_input(x, device, channels_last=channels_last(device))
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # with fp16, skips the step when the gradients overflowed
        scaler.update()
        value = loss.detach()
        streak = torch.where(torch.isfinite(value), 0, streak + 1)
        over = (streak > allowed) & (first_bad == 0)
        first_bad = torch.where(over, batch, first_bad)
        bad_loss = torch.where(over, value.float(), bad_loss)
        total_loss += value.double() * len(y)
        preds.append(logits.detach().argmax(1))
        labels.append(y)
    # The one read of the pass: it waits for the device, so the time after it is the epoch's.
    first_bad, bad_loss, total_loss = (v.item() for v in (first_bad, bad_loss, total_loss))
    y_true, y_pred = torch.cat(labels).cpu().numpy(), torch.cat(preds).cpu().numpy()
    seconds = time.perf_counter() - start
    if first_bad:
        raise UserError(
            f"{desc}, batch {first_bad}: the loss is {bad_loss}; training diverged. "
            f"Lower train.lr, or check the data for blank or corrupt images"
        )
    losses, y_true, y_pred = distributed.gather(np.array([total_loss]), y_true, y_pred)
    return _epoch_result(losses.sum(), y_true, y_pred, seconds, first_batch_s)


def _epoch_result(
    total_loss: float,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    seconds: float = float("nan"),
    first_batch_s: float = float("nan"),
) -> EpochResult:
    return EpochResult(
        loss=float(total_loss) / len(y_true),
        accuracy=float((y_true == y_pred).mean()),
        macro_f1=macro_f1(y_true, y_pred),
        n=len(y_true),
        seconds=seconds,
        first_batch_s=first_batch_s,
    )


def validate(model, loader, device, autocast, criterion) -> EpochResult:
    """Val metrics over the whole val set: each rank scores its share, the shares are joined."""
    probs, labels, mean_loss = predict(
        model, loader, device, autocast, criterion, pad_to=loader.batch_size if autotuned(device) else None
    )
    losses, labels, preds = distributed.gather(np.array([mean_loss * len(labels)]), labels, probs.argmax(1))
    return _epoch_result(losses.sum(), labels, preds)


def make_optimizer(model: nn.Module, t: Train, device: torch.device) -> torch.optim.AdamW:
    """AdamW; on CUDA its fused kernel (one launch for all parameters, no host reads of the step
    count). CPU keeps the default implementation, whose results the demo's numbers come from."""
    fused = device.type == "cuda" or None
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)


def make_scheduler(optimizer, t: Train):
    """ReduceLROnPlateau on val macro-F1 (the study's default) or cosine annealing."""
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=t.plateau.factor, patience=t.plateau.patience, min_lr=t.min_lr
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs, eta_min=t.min_lr)


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
# defaults, the resume state and three callbacks, so the train stage and the tests pass only what they use.
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
