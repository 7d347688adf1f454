"""What the benchmarks share: the images, our cached loader, a faithful copy of the study's loader.

The study (see README, "Where this differs from the study") decoded every original file and ran
CLAHE -> SmallestMaxSize -> CenterCrop -> Resize -> the augmentations -> Normalize -> ToTensorV2
in its Dataset, on every epoch. `StudySplit` does exactly that, with the same albumentations
objects our pipeline uses (so the only difference measured is *where* the work happens).
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from stages.lib.cache import build_cache
from stages.lib.config import STUDY_CLASSES, Config, Preprocess
from stages.lib.data import CachedSplit, balanced_sampler
from stages.lib.layouts import read_course_split
from stages.lib.io import load_params, write_json
from stages.lib.synthetic import make_dataset
from stages.lib.transforms import preprocess_transform, train_augment

REAL_DATA = Path("../shared/data/cxr4")  # the course's real X-rays, beside the project
RESULTS = Path("bench/results")


def params() -> Config:
    return load_params()


def images(tmp: Path, synthetic_sizes: dict | None = None, synthetic: bool = False) -> tuple[Path, str]:
    """(course-layout folder, description): the real X-rays when present, else synthetic ones."""
    if (REAL_DATA / "train_data.csv").is_file() and not synthetic:
        return REAL_DATA, f"real chest X-rays, {REAL_DATA}"
    sizes = synthetic_sizes or {"train": 160, "val": 40, "test": 8}
    make_dataset(tmp / "data", sizes, seed=0, fractions=(0.25, 0.25, 0.25, 0.25))
    return tmp / "data", "SYNTHETIC demo images" + ("" if synthetic else " (real X-rays not found at ../shared/data/cxr4)")


def cache(data: Path, tmp: Path, preprocess: Preprocess) -> Path:
    """Our preprocess stage's cache of `data`, built in `tmp` (with params.yaml's `data` settings)."""
    out = tmp / "cache"
    build_cache(data, out, tmp / "data_report.json", preprocess, load_params().data, workers=os.cpu_count())
    return out


class StudySplit(Dataset):
    """The study's Dataset: decode the original file, then its whole albumentations pipeline."""

    def __init__(self, data: Path, split: str, preprocess: Preprocess, augment, seed: int = 0):
        self.samples = read_course_split(data, split, STUDY_CLASSES)
        self.labels = np.array([s.label for s in self.samples])
        steps = list(preprocess_transform(preprocess).transforms)
        if augment is not None:
            steps += list(train_augment(augment).transforms)
        self.augment = A.Compose(steps + [A.Normalize(), ToTensorV2()], seed=seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = cv2.cvtColor(cv2.imread(str(self.samples[i].path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.augment(image=img)["image"], int(self.labels[i])


def _seed_worker(_worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.augment.set_random_seed(torch.initial_seed() % 2**32)


def loader(dataset, batch_size: int, workers: int, seed: int = 0, pin_memory: bool = False) -> DataLoader:
    """The class-balanced loader the train stage builds, around either dataset."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=balanced_sampler(dataset.labels, generator),
                      generator=generator, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, worker_init_fn=_seed_worker if workers else None)


def ours(cache_dir: Path, augment, seed: int = 0) -> CachedSplit:
    return CachedSplit(cache_dir, "train", augment=train_augment(augment, seed=seed) if augment else None)


def timed(fn, sync=lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def save(name: str, result: dict, path: Path | None = None) -> Path:
    """Write `result` atomically to `path` (default bench/results/<name>.json)."""
    path = path or RESULTS / f"{name}.json"
    write_json(path, result)
    return path


def tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="cxr4-bench-")
