"""The preprocessed cache as a dataset, and class-balanced sampling.

Cache layout written by the preprocess stage (one array per split trains fast and keeps DVC quick):
    <split>.npy    uint8 [N, S, S], one grayscale channel, memory-mapped during training
    <split>.csv    filename,label  (label empty for an image of a hidden-label test set)
    meta.json      classes (data.classes, in order), image size, preprocessing params, counts
Reading the dataset folder (layouts, formats) lives in layouts.py and formats.py.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from stages.lib.errors import UserError

# A hidden-label test image has an empty label in <split>.csv and this label in memory.
UNLABELED = -1


# --- cache -------------------------------------------------------------------------------------

def cache_files(cache_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    cache_dir = Path(cache_dir)
    return cache_dir / f"{split}.npy", cache_dir / f"{split}.csv"


def read_cache_index(cache_dir: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(file names, label indices, the cache's classes) of one split."""
    _, index = cache_files(cache_dir, split)
    if not index.is_file():
        raise UserError(f"{index} not found; run the preprocess stage first (dvc repro preprocess)")
    classes = json.loads((Path(cache_dir) / "meta.json").read_text(encoding="utf-8"))["classes"]
    with open(index, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["filename"] for r in rows]
    labels = np.array([classes.index(r["label"]) if r["label"] else UNLABELED for r in rows], dtype=np.int64)
    return names, labels, classes


class CachedSplit(Dataset):
    """One preprocessed split: uint8 [1, S, S] images plus labels, optionally augmented.

    The array is memory-mapped lazily so each DataLoader worker opens its own view.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str, augment=None):
        self.array_path, _ = cache_files(cache_dir, split)
        self.names, self.labels, self.classes = read_cache_index(cache_dir, split)
        self.augment = augment
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.array_path, mmap_mode="r")
        return self._images

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = np.array(self.images[i])  # a writable copy out of the read-only memmap
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        return torch.from_numpy(np.ascontiguousarray(img))[None], int(self.labels[i])


# --- class imbalance (the study: WeightedRandomSampler + class-weighted cross-entropy) -----------

def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Loss weight per class, n_total / n_class (the study's formula); 0 for an absent class."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    return np.divide(counts.sum(), counts, out=np.zeros_like(counts), where=counts > 0)


def balanced_sampler(labels: np.ndarray, generator: torch.Generator) -> WeightedRandomSampler:
    """Draw len(labels) samples with replacement, each class equally likely in expectation."""
    weights = class_weights(labels, int(labels.max()) + 1)[labels]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels), replacement=True,
        generator=generator,
    )
