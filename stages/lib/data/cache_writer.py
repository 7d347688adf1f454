"""Writing the preprocess cache: one staging array filled image by image (a plain .npy), each split's array and index, the staging folder swapped in whole."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.lib.audit.data_report import class_name
from stages.lib.core.csv_rows import RowWriter
from stages.lib.core.errors import UserError
from stages.lib.core.files import write_text
from stages.lib.core.staging import interrupts_held
from stages.lib.data.dataset import cache_files
from stages.lib.data.layouts import BUILT_IN_METADATA
from stages.lib.data.records import Sample


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


def swap_in(staging: Path, out_dir: Path) -> None:
    """The staging folder becomes `out_dir`; the old one is moved aside first (Ctrl-C held back meanwhile,
    so a cache is always there) and removed after."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    with interrupts_held():
        if out_dir.exists():
            out_dir.rename(old)
        staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


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
