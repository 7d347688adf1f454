"""The preprocess cache written, for the preprocess and external stages: every film decoded, preprocessed
(and fingerprinted, where the stage asks) once, in parallel, into one staging array (a plain .npy); each split's
array and index; meta.json. A full disk ends in one line. `seconds` keeps what each part took, for
bench/scale.py: never in the data report (which must not vary between identical runs) nor in a file's facts.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from stages.lib.core.csv_rows import RowWriter
from stages.lib.core.errors import UserError
from stages.lib.core.files import write_text
from stages.lib.core.names import SYNTHETIC_MARKER, class_name
from stages.lib.core.pool_workers import die_with_parent, ignore_interrupts
from stages.lib.core.progress import progress
from stages.lib.core.provenance import data_hash
from stages.lib.data.dataset import cache_files, file_records
from stages.lib.data.formats import BadImage, load_gray
from stages.lib.data.layouts import BUILT_IN_METADATA
from stages.lib.data.records import Sample
from stages.lib.data.transforms import preprocess_image, preprocess_transform
from stages.lib.params.schema import Data, Preprocess

STAGING_ARRAY = "all.npy"  # every film's row, in the staging folder until the splits are written

seconds: Counter = Counter()  # per part of the builds since bench/scale.py last cleared it


@contextlib.contextmanager
def timed(part: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - start


# --- decoding every film once, in parallel -------------------------------------------------------------

_transform = None  # one per worker process
_max_pixels = None
_fingerprint = None


def _init_worker(p: Preprocess, max_pixels: int, fingerprint: Callable | None, parent: int) -> None:
    die_with_parent(parent)
    ignore_interrupts()
    global _transform, _max_pixels, _fingerprint
    _transform, _max_pixels, _fingerprint = preprocess_transform(p), max_pixels, fingerprint


def _process(path: Path) -> tuple[np.ndarray | None, dict | str, dict[str, float]]:
    """Decode, fingerprint and preprocess one image: (image, facts, seconds per part); a bad image comes back
    as its message, not raised, so the parent can apply data.on_bad_image."""
    start = time.perf_counter()
    try:
        gray, facts = load_gray(path, _max_pixels)
    except BadImage as err:
        return None, str(err), {}
    decoded = time.perf_counter()
    if _fingerprint is not None:
        facts.update(_fingerprint(gray))
    hashed = time.perf_counter()
    image = preprocess_image(gray, _transform)
    return image, facts, {"decode_clahe": decoded - start + time.perf_counter() - hashed, "hashing": hashed - decoded}


def skip_or_refuse(errors: list[BadImage], on_bad_image: str) -> list[BadImage]:
    """The bad images to skip; under data.on_bad_image "error" the first one is refused instead."""
    if errors and on_bad_image == "error":
        raise UserError(f"{errors[0]} (or set data.on_bad_image: skip to skip bad files)")
    return errors


def decode_all(
    samples: list[Sample],
    staging: Path,
    p: Preprocess,
    d: Data,
    workers: int | None,
    fingerprint: Callable[[np.ndarray], dict] | None = None,
):
    """Every image through the worker into one staging array (row i: sample i); returns it, the facts (None
    for a bad image) and the bad images' errors. `fingerprint` adds to a film's facts from its decoded
    pixels (preprocess: the leakage audit's hashes)."""
    size = p.img_size
    images = Staged(staging / STAGING_ARRAY, (len(samples), size, size))
    facts, bad = [], []
    workers = workers or min(os.cpu_count() or 1, 16)
    initargs = (p, d.max_pixels, fingerprint, os.getpid())
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=initargs)
    try:
        results = pool.map(_process, [s.path for s in samples], chunksize=8)
        with progress(results, total=len(samples), desc="preprocess", unit="img") as bar:
            for i, (img, info, parts) in enumerate(bar):
                if img is None:
                    bad += skip_or_refuse([BadImage(info, samples[i].path)], d.on_bad_image)
                    facts.append(None)
                    images.append(np.zeros((size, size), np.uint8))  # keeps row i for sample i
                else:
                    seconds.update(parts)
                    images.append(img)
                    facts.append(info)
    except BaseException:
        images.close()
        raise
    finally:
        pool.shutdown(cancel_futures=True)  # a refusal should not wait for the rest of the dataset
    return images, facts, bad


# --- the arrays, the index and meta.json ---------------------------------------------------------------


def _npy_header(f, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    )


class Staged:
    """uint8 images, one row per sample, in a .npy file written and read with plain file I/O.

    A memory map would keep every page this process touched in its resident set (64 KB per 256 px
    image, in the staging and again in the split arrays: RSS grew with the dataset, bench/scale.py);
    through read/write the pages stay in the kernel's page cache, which it can drop.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.shape, self.file = shape, open(path, "w+b")
        _npy_header(self.file, shape)
        self.offset, self.row_bytes = self.file.tell(), int(np.prod(shape[1:]))

    def append(self, img: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(img, dtype=np.uint8).reshape(self.shape[1:]))

    def __getitem__(self, rows: list[int]) -> np.ndarray:
        self.file.flush()
        out = np.empty((len(rows),) + self.shape[1:], np.uint8)
        for k, row in enumerate(rows):
            data = os.pread(self.file.fileno(), self.row_bytes, self.offset + row * self.row_bytes)
            out[k] = np.frombuffer(data, np.uint8).reshape(self.shape[1:])
        return out

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        """Close and delete the file, once every split is written from it."""
        self.close()
        os.unlink(self.file.name)


# params: one split as the staging array holds it: the folder and split name, its rows in the array, its
# samples and their facts, and the class names it is labelled by.
def write_split(
    staging: Path, split: str, images: Staged, rows: list[int], samples: list[Sample], classes, facts: list[dict]
) -> None:
    array_path, index_path = cache_files(staging, split)
    with open(array_path, "wb") as out:  # plain writes, not a memory map: see Staged
        _npy_header(out, (len(rows),) + images.shape[1:])
        for start in range(0, len(rows), 256):  # 16 MB at 256 px
            out.write(images[rows[start : start + 256]])
    buf = io.StringIO()
    writer = RowWriter(buf)
    # Film metadata after the label: the built-in file facts, then a manifest's extra columns
    # (stages/lib/results/subgroups.py reads them). A hidden-label test image has an empty label.
    extra = [c for c, _ in samples[0].metadata] if samples else []
    writer.writerow(["filename", "label", *BUILT_IN_METADATA, *extra])
    writer.writerows(
        [
            s.name,
            "" if s.label is None else class_name(s.label, classes),
            *[f[k] for k in BUILT_IN_METADATA],
            *[v for _, v in s.metadata],
        ]
        for s, f in zip(samples, facts)
    )
    write_text(index_path, buf.getvalue())


def cache_meta(staging: Path, data_dir: Path, p: Preprocess, classes, counts: dict, layout: str | None = None) -> dict:
    """meta.json's content, once every split (the keys of `counts`) is written in `staging`: what
    `verify_cache` checks the cache against and later stages read; `layout` for an external set. The
    data's DVC hash travels with the cache into every later result; the git state does not, or a new commit
    alone would change the cache and retrain every model."""
    return {
        "classes": list(classes),
        "preprocess": p.model_dump(),
        **({"layout": layout} if layout else {}),
        "counts": counts,
        "synthetic": (data_dir / SYNTHETIC_MARKER).exists(),
        "data": data_hash(data_dir),
        "files": file_records(staging, counts),
    }


FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device, or the user's quota reached


@contextlib.contextmanager
def space_needed(out_dir: Path, films: int, size: int) -> Iterator[None]:
    """A full disk while the cache is written (beside `out_dir`) ends in one line naming the folder and
    the space it needs, instead of an OSError from deep in a write; the old cache is not touched."""
    free = shutil.disk_usage(out_dir.parent).free
    try:
        yield
    except (OSError, UserError) as err:
        cause = err if isinstance(err, OSError) else err.__cause__  # files.atomic_path wraps its OSError
        if not (isinstance(cause, OSError) and cause.errno in FULL):
            raise
        need = 2 * films * size * size  # the staging array and the split arrays copied from it, 1 byte a pixel
        raise UserError(
            f"{cause.strerror} in {out_dir.parent.resolve()} while writing the cache {out_dir}: it needs about "
            f"{size_text(need)} free there ({films} films of {size}x{size} px, held twice until the splits are "
            f"written), {size_text(free)} were free at the start; free some space there and rerun (the old cache "
            "is unchanged)"
        ) from err


def size_text(n: float) -> str:
    """Bytes in binary units, 3 significant digits: `720 KiB`, `2.44 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"
