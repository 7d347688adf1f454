"""Splits of the samples read: repeated films dropped, val and test drawn by patient where a layout lacks them, file names made unique."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from stages.lib.core.errors import UserError
from stages.lib.data.records import Sample


def drop_repeats(
    splits: dict[str, list[Sample]], classes
) -> tuple[dict[str, list[Sample]], dict[str, list[list[str]]]]:
    """Keep one listing of a file listed twice in a split, and return the repeats per split as
    [first listing, repeat] for the data report. One file with two labels (in one split or two)
    is refused: it would train, or be scored, under both."""
    first: dict[Path, Sample] = {}
    kept: dict[str, list[Sample]] = {}
    repeats: dict[str, list[list[str]]] = {}
    for split, samples in splits.items():
        here: dict[Path, Sample] = {}
        for s in samples:
            key = _real(s.path)
            other = first.setdefault(key, s)
            if None not in (other.label, s.label) and other.label != s.label:
                raise UserError(
                    f"{other.source or other.path} and {s.source or s.path} give {s.path} two labels "
                    f"({classes[other.label]}, {classes[s.label]}); keep only the right one"
                )
            if key in here:
                repeats.setdefault(split, []).append([here[key].source or str(here[key].path), s.source or str(s.path)])
            else:
                here[key] = s
        kept[split] = list(here.values())
    return kept, repeats


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symlink loop: check_paths reports it
        return path


def patient_of(s: Sample) -> str:
    return s.patient or f"file:{s.name}"  # unknown patient: each image is its own group


def split_off(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split `samples` into (rest, held-out ~fraction), stratified by class, no patient in both."""
    labels = np.array([-1 if s.label is None else s.label for s in samples])
    groups = [patient_of(s) for s in samples]
    # A tiny set gets fewer, larger folds: sklearn needs a class with at least n_splits members.
    n_folds = min(max(2, round(1 / fraction)), len(set(groups)), int(np.bincount(labels + 1).max()))
    if n_folds < 2:
        raise UserError(
            f"cannot split {len(samples)} image(s) of {len(set(groups))} patient(s) into train and a "
            "held-out split; add images or provide the val/test split"
        )
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(samples)), labels, groups))
    held = set(held.tolist())
    return ([s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held])


def ensure_splits(splits: dict[str, list[Sample]], p) -> tuple[dict[str, list[Sample]], dict]:
    """Make the test split (when none is given) and the val split (when missing or below data.min_val)
    from train, seeded, stratified and grouped by patient; `p` is params' `data`. Returns the splits
    and what was done."""
    seed, notes = p.seed, {}
    train = list(splits.get("train", []))
    if len(train) < 2:
        raise UserError("the training split has fewer than 2 images; add training data")
    test = splits.get("test")
    if test is None:
        train, test = split_off(train, p.test_fraction, seed)
        notes["test"] = f"split from train (data.test_fraction {p.test_fraction}, grouped by patient)"
    val = splits.get("val", [])
    if len(val) < p.min_val:
        train, val = split_off(train + val, p.val_fraction, seed)
        notes["val"] = (
            f"given val had {len(splits.get('val', []))} images (< data.min_val {p.min_val}); "
            f"split from train (data.val_fraction {p.val_fraction}, grouped by patient)"
        )
    return {"train": train, "val": val, "test": test}, notes


def unique_names(samples: list[Sample]) -> list[Sample]:
    """Give repeated names (same file name in two folders) a numeric suffix so index rows stay unique."""
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        n = seen[s.name] = seen.get(s.name, 0) + 1
        out.append(s if n == 1 else replace(s, name=f"{s.name}#{n}"))
    return out
