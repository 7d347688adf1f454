"""Random state: everything a resumed run needs to draw what the uninterrupted run drew (plain types)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader


def _augment_rngs(loader: DataLoader) -> list:
    augment = loader.dataset.augment
    return [augment, *augment.transforms] if augment is not None else []


def rng_state(loader: DataLoader) -> dict:
    """Python, NumPy, torch (CPU, CUDA), the sampler's generator and the augmentation RNGs.

    Plain types and tensors only, so the checkpoint loads with weights_only=True. (With DataLoader
    workers the augmentations run in the workers, whose RNGs are not captured: see docs/design.md.)
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
