"""What the benchmarks share: params, the images, our cached loader, a faithful copy of the study's
loader, repeated timings and the stamp every result carries.

The study (see docs/study.md, "Where this differs from the study") decoded every original file and ran
CLAHE -> SmallestMaxSize -> CenterCrop -> Resize -> the augmentations -> Normalize -> ToTensorV2
in its Dataset, on every epoch. `StudySplit` does exactly that, with the same albumentations
objects our pipeline uses (so the only difference measured is *where* the work happens).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stages.lib.core.errors import UserError
from stages.lib.core.files import write_json
from stages.lib.core.provenance import MAX_LISTED, SOURCE_PATHSPECS, changed_paths
from stages.lib.data.dataset import CachedSplit, balanced_sampler, class_weights
from stages.lib.data.layouts import read_course_split
from stages.lib.data.synthetic import make_dataset
from stages.lib.data.transforms import preprocess_transform, train_augment
from stages.lib.model.networks import build_model
from stages.lib.model.runtime import autocast_dtype, cpu_model, precision
from stages.lib.model.training import make_loaders, make_optimizer
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Augment, Data, Preprocess, Train
from stages.preprocess import build_cache

REAL_DATA = Path("../shared/data/cxr4")  # the course's real X-rays, beside the project
RESULTS = Path("bench/results")
MIN_REPEATS = 3


# --- params: the one place the benchmarks read them -----------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The typed params sections the benchmarks hand to the stages' own functions."""

    preprocess: Preprocess
    data: Data
    augment: Augment
    train: Train
    classes: tuple[str, ...]
    seed: int  # the first of params' seeds: the benchmarks time one run

    @property
    def img_size(self) -> int:
        return self.preprocess.img_size

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    def at_size(self, img_size: int) -> Settings:
        return replace(self, preprocess=self.preprocess.model_copy(update={"img_size": int(img_size)}))

    def with_train(self, **overrides) -> Settings:
        return replace(self, train=self.train.model_copy(update=overrides))

    def with_data(self, **overrides) -> Settings:
        return replace(self, data=self.data.model_copy(update=overrides))

    @property
    def deterministic(self) -> bool:
        return self.train.deterministic

    @property
    def compile(self) -> bool:
        return self.train.compile

    def model(self, backbone: str) -> nn.Module:
        """A backbone from scratch (no ImageNet download) with the study's head."""
        return build_model(backbone, len(self.classes), self.train.dropout, pretrained=False)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.train.lr, weight_decay=self.train.weight_decay)

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        return autocast_dtype(self.train.precision, device)

    def loaders(
        self, cache_dir: Path, device: torch.device, workers: int | None = None
    ) -> tuple[DataLoader, DataLoader]:
        """The train stage's own train and val loaders (`workers` overrides train.num_workers)."""
        t = self.train if workers is None else self.train.model_copy(update={"num_workers": workers})
        return make_loaders(str(cache_dir), t, self.augment, device, self.seed)


def settings(path: str | os.PathLike = "params.yaml") -> Settings:
    cfg = load_params(path)
    return Settings(
        preprocess=cfg.preprocess,
        data=cfg.data,
        augment=cfg.augment,
        train=cfg.train,
        classes=tuple(cfg.data.classes),
        seed=cfg.seeds[0],
    )


def training_parts(s: Settings, backbone: str, labels: np.ndarray, device: torch.device):
    """(net, criterion, optimizer, GradScaler, autocast) set up as the train stage's `fit` does."""
    torch.manual_seed(s.seed)
    model = s.model(backbone).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    weights = torch.as_tensor(class_weights(labels, len(s.classes)), dtype=torch.float32, device=device)
    autocast, scaler = precision(s.train.precision, device)
    net = torch.compile(model) if s.compile else model
    return net, nn.CrossEntropyLoss(weight=weights), make_optimizer(model, s.train, device), scaler, autocast


# --- images and loaders ------------------------------------------------------------------------


def images(tmp: Path, synthetic_sizes: dict | None = None, data: Path | None = None) -> tuple[Path, str]:
    """(course-layout folder, description): `data` if given, else the real X-rays when present, else
    synthetic films of `synthetic_sizes`."""
    if data is not None:
        return data, f"{data}"
    if (REAL_DATA / "train_data.csv").is_file() and synthetic_sizes is None:
        return REAL_DATA, f"real chest X-rays, {REAL_DATA}"
    sizes = synthetic_sizes or {"train": 160, "val": 40, "test": 8}
    make_dataset(tmp / "data", sizes, seed=0, fractions=(0.25, 0.25, 0.25, 0.25))
    note = "" if synthetic_sizes else f" (real X-rays not found at {REAL_DATA})"
    return tmp / "data", f"SYNTHETIC demo films, {sum(sizes.values())} images{note}"


def cache(data: Path, tmp: Path, s: Settings) -> Path:
    """Our preprocess stage's cache of `data` at `s.img_size`, built in `tmp`."""
    out = tmp / f"cache{s.img_size}"
    build_cache(data, out, tmp / f"data_report{s.img_size}.json", s.preprocess, s.data, workers=os.cpu_count())
    return out


class StudySplit(Dataset):
    """The study's Dataset: decode the original file, then its whole albumentations pipeline."""

    def __init__(self, data: Path, split: str, s: Settings, augment: bool):
        self.samples = read_course_split(data, split, s.classes)
        self.labels = np.array([x.label for x in self.samples])
        steps = list(preprocess_transform(s.preprocess).transforms)
        if augment:
            steps += list(train_augment(s.augment).transforms)
        self.augment = A.Compose(steps + [A.Normalize(), ToTensorV2()], seed=s.seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img = cv2.cvtColor(cv2.imread(str(self.samples[i].path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.augment(image=img)["image"], int(self.labels[i])


def _seed_worker(_worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info.dataset.augment is not None:
        info.dataset.augment.set_random_seed(torch.initial_seed() % 2**32)


def loader(dataset, s: Settings, workers: int, balanced: bool = True) -> DataLoader:
    """The class-balanced loader the train stage builds (or a plain one in order), around either dataset."""
    generator = torch.Generator().manual_seed(s.seed)
    sampler = balanced_sampler(dataset.labels, generator) if balanced else None
    return DataLoader(
        dataset,
        batch_size=s.batch_size,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker if workers else None,
    )


def ours(cache_dir: Path, s: Settings, split: str = "train") -> CachedSplit:
    augment = train_augment(s.augment, seed=s.seed) if split == "train" else None
    return CachedSplit(cache_dir, split, augment=augment)


def same_images(ours_set, study_set) -> int:
    """The number of images both sides read; refuses a cache whose split differs from the CSV's."""
    if len(ours_set) != len(study_set):
        raise UserError(
            f"the cache holds {len(ours_set)} images where the course CSV lists {len(study_set)}: "
            "preprocess re-made the split (data.min_val); give the benchmark a layout with its val split"
        )
    return len(ours_set)


def study_workers() -> int:
    """The study's DataLoader workers, max(1, cores // 2); the benchmarks give both sides this many."""
    return max(1, (os.cpu_count() or 1) // 2)


# --- timing ------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> tuple[float, object]:
    """(seconds, fn's result)."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def interleaved(sides: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list]:
    """Run every side `warmup` times, then `repeats` rounds of one run per side in turn, so load that
    comes and goes on the machine hits all sides alike. {side: [(seconds, result), ...]}."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    runs: dict[str, list] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            runs[name].append(timed(fn))
    return runs


def spread(values: list[float], digits: int = 3) -> dict:
    """Median, min, max and every run, rounded."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def check_repeats(repeats: int, smoke: bool) -> None:
    if repeats < MIN_REPEATS and not smoke:
        raise UserError(f"--repeats {repeats}: time each side at least {MIN_REPEATS} times (median, min, max)")


# --- the stamp on every result -------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
    }


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def stamp(repeats: int | None = None) -> dict:
    """Commit, date, machine and versions. Without git (a copied tree) BENCH_COMMIT may name the commit."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or os.environ.get("BENCH_COMMIT")
    # the stages' own definition of a changed tree: code, params, pipeline, requirements (not docs)
    status = _git("status", "--porcelain", "-z", "--untracked-files=no", "--", *SOURCE_PATHSPECS)
    modified = changed_paths(status) if status is not None else None
    return {
        "commit": commit,
        "uncommitted_changes": bool(modified) if modified is not None else None,
        **({"modified": modified[:MAX_LISTED]} if modified else {}),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **({"repeats": repeats} if repeats is not None else {}),
    }


def save(name: str, result: dict, path: Path | None = None) -> Path:
    """Write `result` atomically to `path` (default bench/results/<name>.json)."""
    path = path or RESULTS / f"{name}.json"
    write_json(path, result)
    return path


def tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="cxr4-bench-")
