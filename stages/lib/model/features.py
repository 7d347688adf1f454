"""What a model sees of a film, for the OOD score (stages/lib/results/ood.py fits and applies it): the
penultimate features (the input of the head's Linear layer) of each forward pass, and of cached splits."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from stages.lib.data.dataset import CachedSplit
from stages.lib.data.transforms import to_model_input
from stages.lib.model.networks import head
from stages.lib.results.ood import film_features


@contextlib.contextmanager
def capture_features(model, backbone: str):
    """Collect the head Linear's input (the penultimate features) of every forward pass into a list."""
    seen: list[torch.Tensor] = []
    handle = head(model, backbone)[-1].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def split_features(model, backbone: str, cache_dir: str, split: str, batch_size: int, device) -> dict:
    """{"net": penultimate features [N, F], "film": film_features [N, 64], "labels": [N]} of a cached split."""
    data = CachedSplit(cache_dir, split)
    model.eval()
    with capture_features(model, backbone) as seen:
        for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
            model(to_model_input(x, device))
    films = np.asarray(data.images)[:, None]
    return {
        "net": torch.cat([f.float().cpu() for f in seen]).numpy(),
        "film": film_features(films),
        "labels": np.asarray(data.labels),
    }


def measure(model, backbone: str, cache_dir: str, others: dict[str, tuple[str, str]], batch_size: int, device):
    """(features, films) to fit and flag on: `split_features` of the cache's train, val and test and of
    each of `others` ({key: (another cache, its split)}, e.g. the external sets under "external/<name>"),
    and the films (uint8 [N, 1, S, S]) of all but train."""
    flagged_on = {**{s: (cache_dir, s) for s in ("val", "test")}, **others}
    feats = {
        key: split_features(model, backbone, c, split, batch_size, device)
        for key, (c, split) in {"train": (cache_dir, "train"), **flagged_on}.items()
    }
    films = {key: np.asarray(CachedSplit(c, split).images)[:, None] for key, (c, split) in flagged_on.items()}
    return feats, films
