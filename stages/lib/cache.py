"""Build the preprocessed cache: decode + CLAHE + crop + resize each image once, in parallel."""
from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stages.lib.data import CLASSES, SPLITS, Sample, cache_files, read_course_split, read_gray_uint8
from stages.lib.errors import UserError
from stages.lib.io import umask, write_json, write_text
from stages.lib.transforms import preprocess_image, preprocess_transform

SYNTHETIC_MARKER = "SYNTHETIC"  # file the demo generator leaves in its data folder

_transform = None  # one per worker process


def _init_worker(p: dict) -> None:
    global _transform
    _transform = preprocess_transform(p)


def _process(path: Path) -> np.ndarray:
    return preprocess_image(read_gray_uint8(path), _transform)


def build_cache(data_dir: str | os.PathLike, out_dir: str | os.PathLike, p: dict, workers: int | None = None) -> dict:
    """Preprocess every split of the course layout under `data_dir` into `out_dir`.

    All CSVs are validated before any image is decoded. The cache folder is assembled beside
    `out_dir` and swapped in at the end, so a failure leaves the previous cache untouched.
    Returns the cache's meta.json content.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    splits = {split: read_course_split(data_dir, split) for split in SPLITS}
    for c, name in enumerate(CLASSES):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(f"{data_dir / 'train_data.csv'}: no training image of class {name!r}; every class needs some")

    size = int(p["img_size"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o777 & ~umask())
    try:
        workers = workers or min(os.cpu_count() or 1, 16)
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(p,)) as pool:
            for split, samples in splits.items():
                _write_split(staging, split, samples, size, pool)
        meta = {
            "classes": list(CLASSES),
            "preprocess": dict(p),
            "counts": {split: _counts(samples) for split, samples in splits.items()},
            "synthetic": (data_dir / SYNTHETIC_MARKER).exists(),
        }
        write_json(staging / "meta.json", meta)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _write_split(staging: Path, split: str, samples: list[Sample], size: int, pool) -> None:
    array_path, index_path = cache_files(staging, split)
    images = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(samples), size, size))
    results = pool.map(_process, [s.path for s in samples], chunksize=8)
    for i, img in enumerate(tqdm(results, total=len(samples), desc=f"preprocess {split}", unit="img", disable=None)):
        images[i] = img
    images.flush()
    del images
    rows = "".join(f"{s.path.name},{CLASSES[s.label]}\n" for s in samples)
    write_text(index_path, "filename,label\n" + rows)


def _counts(samples: list[Sample]) -> dict:
    labels = np.bincount([s.label for s in samples], minlength=len(CLASSES))
    return {name: int(n) for name, n in zip(CLASSES, labels)}


def _swap_in(staging: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
