"""New images for predict: the files a folder (with its subfolders) or a CSV list names, decoded and
preprocessed exactly as the preprocess stage does, served in batches so that memory holds one batch
(per DataLoader worker) however many images there are."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from stages.lib.core.errors import UserError
from stages.lib.data.formats import ROBUST_PERCENTILES, VALUES_PRESENT, BadImage, load_gray
from stages.lib.data.records import files_in, find_listed, fix_missing, read_csv
from stages.lib.data.transforms import preprocess_image, preprocess_transform
from stages.lib.params.schema import Preprocess

LIST_COLUMN = "path"  # as in the manifest layout, so a data/manifest.csv is a list too


@dataclass(frozen=True)
class ImageFile:
    path: Path  # the file to read
    name: str  # its row's name: the path below the folder, or as the CSV lists it
    where: str  # where it was listed, for messages ("" for a folder's file, else "list.csv line 3")


def list_images(source: str | os.PathLike) -> list[ImageFile]:
    """Every file under a folder (subfolders too; dot files, Thumbs.db and desktop.ini left out,
    as preprocess leaves them), or every row of a CSV file with a `path` column."""
    source = Path(source)
    if source.is_dir():
        files = [ImageFile(p, p.relative_to(source).as_posix(), "") for p in files_in(source)]
    elif source.is_file() and source.suffix.lower() == ".csv":
        files = _from_list(source)
    elif source.exists():
        raise UserError(
            f"{source} is neither a folder nor a .csv list; pass a folder of images, or a CSV "
            f"with a '{LIST_COLUMN}' column, with --images"
        )
    else:
        raise UserError(
            f"{source} not found; pass a folder of images, or a CSV with a '{LIST_COLUMN}' column, with --images"
        )
    if not files:
        raise UserError(f"{source} holds no image files; nothing to predict")
    return files


def _from_list(csv_path: Path) -> list[ImageFile]:
    """Rows of a CSV list; a relative path is relative to the CSV's own folder (like the manifest's), and
    matched to the disk's names under one Unicode form (records.find_listed)."""
    columns, rows = read_csv(csv_path)
    if LIST_COLUMN not in columns:
        raise UserError(
            f"{csv_path}: no '{LIST_COLUMN}' column (columns: {', '.join(columns) or 'none'}); "
            f"put the image paths in a column named {LIST_COLUMN}"
        )
    files, listings = [], {}
    for line, row in rows:
        where = f"{csv_path} line {line}"
        if not row[LIST_COLUMN]:
            raise UserError(f"{where}: empty {LIST_COLUMN}; fill it in or remove the row")
        files.append(
            ImageFile(find_listed(csv_path.parent, row[LIST_COLUMN], where, listings), row[LIST_COLUMN], where)
        )
    return files


class DecodedImages(Dataset):
    """Item i: (i, uint8 [1, S, S] tensor, "") or, for a bad file, (i, None, the one-line reason)."""

    def __init__(self, files: list[ImageFile], preprocess: Preprocess, max_pixels: int):
        self.files, self.max_pixels = files, max_pixels
        self.transform = preprocess_transform(preprocess)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        f = self.files[i]
        try:
            if not f.path.exists():  # missing, or a link that loops or points nowhere
                fix = fix_missing(f.name, "fix the path or remove it")
                raise BadImage(f"{f.path}: not found (or a broken or looping link); {fix}", f.path)
            gray, facts = load_gray(f.path, self.max_pixels, "--max-pixels")
        except UserError as err:
            return i, None, f"{f.where}: {err}" if f.where else str(err)
        for note in film_notes(facts):
            tqdm.write(f"note: {f.path}: {note}", file=sys.stderr)
        return i, torch.from_numpy(preprocess_image(gray, self.transform))[None], ""


def film_notes(facts: dict) -> list[str]:
    """How a film was read, where it is not the plain way: said per film (preprocess says it in its report)."""
    notes = [f"{facts['frames']} frames or pages; the first was used"] if facts.get("frames", 1) > 1 else []
    if facts.get("scaled_by") == VALUES_PRESENT:
        low, high = ROBUST_PERCENTILES
        notes.append(f"no DICOM window; scaled by the values present ({low}th-{high}th percentile, padding left out)")
    if facts.get("transparent"):
        notes.append("transparent pixels composited on black")
    return notes


def collate(items) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """(indices of the decoded files, their images [B, 1, S, S] or None, [(index, reason)] of bad ones)."""
    good = [(i, x) for i, x, _ in items if x is not None]
    return (
        [i for i, _ in good],
        torch.stack([x for _, x in good]) if good else None,
        [(i, reason) for i, x, reason in items if x is None],
    )


def image_batches(
    files: list[ImageFile],
    preprocess: Preprocess,
    max_pixels: int,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches in the files' order; `workers` processes decode ahead (each holds at most two batches)."""
    return DataLoader(
        DecodedImages(files, preprocess, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )
