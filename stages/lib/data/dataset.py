"""The preprocessed cache as a dataset, and class-balanced sampling.

Cache layout written by the preprocess stage (one array per split trains fast and keeps DVC quick):
    <split>.npy    uint8 [N, S, S], one grayscale channel, memory-mapped during training
    <split>.csv    filename,label,format,bit_depth[,a manifest's metadata columns]  (label empty for an
                   image of a hidden-label test set)
    meta.json      classes (data.classes, in order), image size, preprocessing params, counts, and per
                   file its shape/rows, dtype and SHA-256, which `verify_cache` checks before a model is built
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

from stages.lib.core.errors import UserError
from stages.lib.core.files import sha256_file
from stages.lib.core.names import UNLABELED

# --- cache -------------------------------------------------------------------------------------


def cache_files(cache_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    cache_dir = Path(cache_dir)
    return cache_dir / f"{split}.npy", cache_dir / f"{split}.csv"


def file_records(cache_dir: str | os.PathLike, splits) -> dict:
    """meta.json's `files`: per split's array its shape, dtype and SHA-256, per index its rows and SHA-256."""
    records = {}
    for split in splits:
        array, index = cache_files(cache_dir, split)
        shape, dtype, _ = _npy_header(array)
        records[array.name] = {"shape": list(shape), "dtype": dtype, "sha256": sha256_file(array)}
        records[index.name] = {"rows": _index_rows(index), "sha256": sha256_file(index)}
    return records


META_TYPES = {"classes": list, "preprocess": dict, "counts": dict, "files": dict}
DAMAGED = "the cache is damaged or incomplete; rerun `dvc repro preprocess --force`"
_verified: set[tuple] = set()  # caches this process verified, by their files' (path, inode, size, mtime)


def verify_cache(cache_dir: str | os.PathLike) -> dict:
    """The cache's meta.json, once every file it lists is the one preprocess wrote: the .npy header
    (shape, dtype), the file size and the index rows first (cheap), then a SHA-256 of every byte
    (the whole cache read once; docs/data.md gives the cost per GB). Anything else (truncated,
    garbage, flipped bits, other rows or size, a broken meta.json) is refused in one line."""
    meta_path = Path(cache_dir) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{meta_path} not found; run the preprocess stage first (dvc repro preprocess)") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{meta_path}: unreadable ({err.__class__.__name__}); {DAMAGED}") from err
    missing = [k for k, kind in META_TYPES.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), kind)]
    if missing:
        raise UserError(f"{meta_path}: no valid {', '.join(missing)}; {DAMAGED}")
    files, splits = meta["files"], list(meta["counts"])
    paths = [path for split in splits for path in cache_files(cache_dir, split)]
    key = _stat_key([meta_path, *paths])
    if key in _verified:  # train's main() and train() both check: hash once per process
        return meta
    for path in paths:
        _check_file(path, files.get(path.name))
    _verified.add(key)
    return meta


def _stat_key(paths: list[Path]) -> tuple:
    key = []
    for path in paths:
        try:
            st = path.stat()
            key.append((str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            key.append((str(path), None))
    return tuple(key)


def _check_file(path: Path, expected: dict | None) -> None:
    if not isinstance(expected, dict):
        raise UserError(f"{path.parent / 'meta.json'} does not describe {path.name}; {DAMAGED}")
    try:
        if path.suffix == ".npy":
            shape, dtype, offset = _npy_header(path)
            size = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
            if [list(shape), dtype] != [expected.get("shape"), expected.get("dtype")] or path.stat().st_size != size:
                raise UserError(
                    f"{path}: holds {dtype} {list(shape)} in {path.stat().st_size} bytes, meta.json "
                    f"says {expected.get('dtype')} {expected.get('shape')}; {DAMAGED}"
                )
            index = path.with_suffix(".csv")
            if index.is_file() and _index_rows(index) != shape[0]:
                raise UserError(f"{path}: {shape[0]} images but {index.name} lists {_index_rows(index)}; {DAMAGED}")
        elif _index_rows(path) != expected.get("rows"):
            raise UserError(f"{path}: {_index_rows(path)} rows, meta.json says {expected.get('rows')}; {DAMAGED}")
        if sha256_file(path) != expected.get("sha256"):
            raise UserError(f"{path}: its checksum differs from meta.json's (changed or corrupted bytes); {DAMAGED}")
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror}); {DAMAGED}") from err
    except (ValueError, EOFError, csv.Error) as err:  # a .npy header or CSV that is not one
        raise UserError(f"{path}: not a valid {path.suffix[1:]} file ({err.__class__.__name__}); {DAMAGED}") from err


def _npy_header(path: Path) -> tuple[tuple[int, ...], str, int]:
    """(shape, dtype name, data offset) from a .npy file's header, without reading its data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # what np.save and open_memmap write for uint8
            raise ValueError(f"npy version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        return tuple(shape), dtype.name + ("/fortran" if fortran else ""), f.tell()


def _index_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1  # minus the header


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
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(labels),
        replacement=True,
        generator=generator,
    )
