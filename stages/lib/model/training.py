"""The training loop: the loaders, one epoch of training, validation, and `fit` around them.

Train metrics come from the training pass itself (predictions on the augmented, resampled
batches), not from a second inference pass over the training set as the study did: that pass cost
a third of the compute and measures the same thing less honestly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stages.lib.core.errors import UserError
from stages.lib.data.dataset import CachedSplit, balanced_sampler
from stages.lib.data.transforms import to_model_input, train_augment
from stages.lib.model import distributed
from stages.lib.model.inference import predict
from stages.lib.model.runtime import autotuned, channels_last, resolve_workers
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
