"""Running a trained model: rebuild it from its checkpoint, and class probabilities for a loader.

Used by training (validation), evaluate and predict, so all three score images the same way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from stages.lib.core.errors import UserError
from stages.lib.data.dataset import CachedSplit
from stages.lib.data.transforms import to_model_input
from stages.lib.model.checkpoints import load_checkpoint
from stages.lib.model.networks import build_model
from stages.lib.model.runtime import (
    Runtime,
    autotuned,
    channels_last,
    describe,
    pick_device,
    precision,
    resolve_workers,
    use_threads,
)
from stages.lib.params.schema import Preprocess, Train


# params: the model, its loader and device, then options with defaults (precision, loss, flip TTA, padding)
# that evaluate, training and the benchmarks each set.
@torch.no_grad()
def predict(
    model,
    loader,
    device,
    autocast=contextlib.nullcontext(),
    criterion=None,
    hflip: bool = False,
    pad_to: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities [N, C], labels [N] and mean loss (nan without a criterion).

    `hflip` averages the probabilities of each image and its mirror (test-time augmentation).
    `pad_to` fills a short last batch with blank images, whose outputs are dropped (eval mode scores
    each image alone), so cuDNN sees one input shape. Results stay on the device until the end.
    """
    model.eval()
    probs, labels = [], []
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        n = len(y)
        if pad_to is not None and n < pad_to:
            x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))])
        x = to_model_input(x, device, channels_last=channels_last(device))
        y = y.to(device, non_blocking=True)
        with autocast:
            logits = model(x)[:n]
            mirrored = model(x.flip(-1))[:n] if hflip else None
        if criterion is not None:
            total_loss += criterion(logits.float(), y).double() * n
        p = torch.softmax(logits.float(), 1)
        if mirrored is not None:
            p = (p + torch.softmax(mirrored.float(), 1)) / 2
        probs.append(p)
        labels.append(y)
    labels = torch.cat(labels).cpu().numpy()
    mean_loss = total_loss.item() / len(labels) if criterion is not None else float("nan")
    return torch.cat(probs).cpu().numpy(), labels, mean_loss


# params: one cached split (model, cache, split, batch size, device), then options with defaults that evaluate
# and external set (flip TTA, precision, workers, a transform of each film).
def predict_split(
    model,
    cache_dir: str,
    split: str,
    batch_size: int,
    device: torch.device,
    hflip: bool = False,
    autocast=contextlib.nullcontext(),
    workers: int = 0,
    transform=None,
):
    """(file names, labels, probabilities [N, C]) for one cached split, in `autocast`'s precision; `transform`
    changes each film first (transforms.LungsHidden hides the lungs)."""
    data = CachedSplit(cache_dir, split, augment=transform)
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda", num_workers=workers
    )
    probs, labels, _ = predict(
        model, loader, device, autocast, hflip=hflip, pad_to=batch_size if autotuned(device) else None
    )
    return data.names, labels, probs


@dataclass(frozen=True)
class Scorer:
    """A model set up to score cached splits as evaluate does: on the device it was moved to, in the
    train precision with the train DataLoader workers, each image with its mirror when `hflip`."""

    model: torch.nn.Module
    device: torch.device
    batch_size: int
    hflip: bool
    autocast: contextlib.AbstractContextManager
    workers: int
    runtime: Runtime  # what it computes with, for the stage's log line

    @classmethod
    def ready(cls, model, t: Train, batch_size: int, hflip: bool) -> Scorer:
        """Move `model` to the device inference runs on (channels_last where it pays) and score as
        training ran: `t` is params.yaml's `train` section (its precision, DataLoader workers and threads)."""
        use_threads(t.threads)
        device = pick_device()
        workers = resolve_workers(t.num_workers, device)
        autocast, _ = precision(t.precision, device)
        model.to(device)
        if channels_last(device):
            model.to(memory_format=torch.channels_last)
        return cls(model, device, batch_size, hflip, autocast, workers, describe(device, t.precision, workers))

    def split(self, cache_dir: str | os.PathLike, split: str, transform=None):
        """(file names, labels, probabilities [N, C]) for one cached split (predict_split), each film through
        `transform` first when given."""
        return predict_split(
            self.model,
            str(cache_dir),
            split,
            self.batch_size,
            self.device,
            hflip=self.hflip,
            autocast=self.autocast,
            workers=self.workers,
            transform=transform,
        )


def load_model(path: str | os.PathLike, backbone: str | None = None, preprocess: dict | None = None, classes=None):
    """(network, metadata) from a checkpoint, refusing one that does not fit what the caller expects.

    The metadata's `preprocess` comes back as a `Preprocess`, so predict applies exactly the
    preprocessing the model was trained on.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    check_fit(path, meta, backbone, preprocess, classes)
    stage = f"train@{meta['backbone']}" + (f"-{meta['seed']}" if "seed" in meta else "")  # dvc.yaml's matrix name
    retrain = f"retrain it (dvc repro --force {stage})"
    stored = Preprocess.model_validate(meta["preprocess"])  # complete and valid: load_checkpoint checked it
    model = build_model(meta["backbone"], len(meta["classes"]), meta["dropout"], pretrained=False)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(
            f"{path}: its weights do not fit today's {meta['backbone']} ({str(err).splitlines()[0]}); {retrain}"
        ) from err
    return model, {**meta, "preprocess": stored}


def check_fit(path, meta: dict, backbone: str | None = None, preprocess: dict | None = None, classes=None) -> None:
    """Refuse the checkpoint at `path` (its metadata `meta`) when it does not fit what the caller expects:
    its classes, its backbone, the preprocessing of the cache it will run on."""
    if isinstance(meta["preprocess"], Preprocess):  # the metadata load_model returns
        meta = {**meta, "preprocess": meta["preprocess"].model_dump()}
    if classes is not None and list(meta["classes"]) != list(classes):
        raise UserError(
            f"{path} was trained for classes {meta['classes']}, the data has {list(classes)}; "
            f"retrain it on this data (dvc repro)"
        )
    if backbone is not None and meta["backbone"] != backbone:
        raise UserError(
            f"{path} holds a {meta['backbone']} model, not {backbone}; retrain it (dvc repro train@{backbone})"
        )
    if preprocess is not None and meta["preprocess"] != preprocess:
        raise UserError(
            f"{path} was trained on images preprocessed with {meta['preprocess']}, the cache has "
            f"{preprocess}; rerun the pipeline (dvc repro)"
        )
