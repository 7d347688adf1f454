"""Reading the course layout, the preprocessed cache, and class-balanced sampling.

Course layout under the data folder:
    {train,val,test}_images/         image files
    {train,val,test}_data.csv        new_filename,normal,bacteria,virus,COVID-19 (one-hot)

Cache layout written by the preprocess stage (one array per split trains fast and keeps DVC quick):
    <split>.npy    uint8 [N, S, S], one grayscale channel, memory-mapped during training
    <split>.csv    filename,label
    meta.json      classes, image size, preprocessing params, counts
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from stages.lib.errors import UserError

CLASSES = ("normal", "bacteria", "virus", "COVID-19")
SPLITS = ("train", "val", "test")
COURSE_COLUMNS = ("new_filename",) + CLASSES


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def read_course_split(data_dir: str | os.PathLike, split: str) -> list[Sample]:
    """Parse `<split>_data.csv` and check every row names one existing image and one class."""
    data_dir = Path(data_dir)
    csv_path = data_dir / f"{split}_data.csv"
    image_dir = data_dir / f"{split}_images"
    if not csv_path.is_file():
        raise UserError(f"{csv_path} not found; the course layout needs {split}_data.csv beside {split}_images/")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = tuple(c.strip() for c in (reader.fieldnames or ()))
        missing = [c for c in COURSE_COLUMNS if c not in columns]
        if missing:
            raise UserError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; expected header "
                f"{','.join(COURSE_COLUMNS)}"
            )
        samples = [_course_row(row, line, csv_path, image_dir) for line, row in enumerate(reader, start=2)]
    if not samples:
        raise UserError(f"{csv_path} lists no images; add rows or remove the split")
    return samples


def _course_row(row: dict, line: int, csv_path: Path, image_dir: Path) -> Sample:
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    try:
        onehot = [int(float(row[c])) for c in CLASSES]
    except ValueError as err:
        raise UserError(f"{csv_path}:{line}: label columns must be 0 or 1 ({err})") from err
    if sorted(onehot) != [0, 0, 0, 1]:
        raise UserError(
            f"{csv_path}:{line}: row for {row['new_filename']!r} must have exactly one 1 among "
            f"{', '.join(CLASSES)}, got {onehot}"
        )
    name = row["new_filename"]
    path = image_dir / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise UserError(f"{csv_path}:{line}: {name!r} escapes {image_dir}; use a plain file name")
    if not path.is_file():
        raise UserError(f"{csv_path}:{line}: image {path} not found; fix the file name or add the image")
    return Sample(path=path, label=onehot.index(1))


def read_gray_uint8(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to one 8-bit grayscale channel (8/16-bit, gray/RGB/RGBA)."""
    buf = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise UserError(f"{path}: not a readable image (corrupt, truncated or unsupported); replace or remove it")
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)  # keep the full 16-bit range, drop the low byte
    elif img.dtype != np.uint8:
        raise UserError(f"{path}: unsupported pixel type {img.dtype}; convert to 8- or 16-bit PNG/JPEG")
    return img


# --- cache -------------------------------------------------------------------------------------

def cache_files(cache_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    cache_dir = Path(cache_dir)
    return cache_dir / f"{split}.npy", cache_dir / f"{split}.csv"


def read_cache_index(cache_dir: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray]:
    _, index = cache_files(cache_dir, split)
    if not index.is_file():
        raise UserError(f"{index} not found; run the preprocess stage first (dvc repro preprocess)")
    with open(index, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["filename"] for r in rows]
    labels = np.array([CLASSES.index(r["label"]) for r in rows], dtype=np.int64)
    return names, labels


class CachedSplit(Dataset):
    """One preprocessed split: uint8 [1, S, S] images plus labels, optionally augmented.

    The array is memory-mapped lazily so each DataLoader worker opens its own view.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str, augment=None):
        self.array_path, _ = cache_files(cache_dir, split)
        self.names, self.labels = read_cache_index(cache_dir, split)
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

def class_counts(labels: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Loss weight per class, n_total / n_class (the study's formula); 0 for an absent class."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    return np.divide(counts.sum(), counts, out=np.zeros_like(counts), where=counts > 0)


def balanced_sampler(labels: np.ndarray, generator: torch.Generator) -> WeightedRandomSampler:
    """Draw len(labels) samples with replacement, each class equally likely in expectation."""
    weights = class_weights(labels)[labels]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels), replacement=True,
        generator=generator,
    )
