"""Build the preprocessed cache and the data report in one pass over the images.

Order: parse the layout and check every path (nothing decoded yet) -> decode, CLAHE, crop, resize
and hash each image once, in parallel -> make missing splits -> leakage and shortcut checks ->
write the per-split arrays. The cache is assembled beside `out_dir` and swapped in at the end and
the report is written only then, so any refusal leaves the previous outputs untouched.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stages.lib.config import Data, Preprocess
from stages.lib.data import cache_files
from stages.lib.data_report import class_name, image_stats, split_counts
from stages.lib.errors import UserError
from stages.lib.formats import BadImage, load_gray
from stages.lib.io import umask, write_json, write_text
from stages.lib.layouts import Sample, check_paths, detect_layout, ensure_splits, read_layout, unique_names
from stages.lib.leakage import exact_hash, find_leaks, leak_summary, perceptual_hash
from stages.lib.shortcut import shortcut_audit
from stages.lib.transforms import preprocess_image, preprocess_transform

SYNTHETIC_MARKER = "SYNTHETIC"  # file the demo generator leaves in its data folder

_transform = None  # one per worker process
_max_pixels = None


def _init_worker(p: Preprocess, max_pixels: int) -> None:
    global _transform, _max_pixels
    _transform, _max_pixels = preprocess_transform(p), max_pixels


def _process(path: Path) -> tuple[np.ndarray | None, dict | str]:
    """Decode, preprocess and hash one image; a bad image comes back as its message, not raised,
    so the parent can apply data.on_bad_image."""
    try:
        gray, facts = load_gray(path, _max_pixels)
    except BadImage as err:
        return None, str(err)
    facts.update(exact=exact_hash(gray), phash=perceptual_hash(gray))
    return preprocess_image(gray, _transform), facts


def build_cache(data_dir: str | os.PathLike, out_dir: str | os.PathLike, report_path: str | os.PathLike,
                p: Preprocess, d: Data, workers: int | None = None) -> dict:
    """Preprocess the dataset under `data_dir` into `out_dir` and write the data report.

    `p` is params.yaml's `preprocess` section, `d` its `data` section. Returns the report.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    layout = detect_layout(data_dir) if d.layout == "auto" else d.layout
    given = {split: unique_names(samples) for split, samples in read_layout(data_dir, layout, d.classes).items()}
    samples = [s for split in given.values() for s in split]
    skipped = _bad(check_paths(samples, data_dir), d.on_bad_image)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o777 & ~umask())
    try:
        missing = {e.path for e in skipped}
        todo = [s for s in samples if s.path not in missing]
        images, facts, bad = _decode_all(todo, staging / "all.npy", p, d, workers)
        skipped += bad
        # (name, path) identifies an image: equal keys in two splits are the same file.
        row_of = {(s.name, s.path): i for i, s in enumerate(todo) if facts[i] is not None}
        splits = {split: [_with_dicom_patient(s, facts[row_of[s.name, s.path]]) for s in ss if (s.name, s.path) in row_of]
                  for split, ss in given.items()}
        splits, notes = ensure_splits(splits, d)
        _check_classes(splits, data_dir, d.classes)
        rows = {split: [(facts[row_of[s.name, s.path]], s) for s in ss] for split, ss in splits.items()}
        report = {"layout": layout, **_checks(rows, notes, skipped, d)}
        for split, ss in splits.items():
            _write_split(staging, split, images, [row_of[s.name, s.path] for s in ss], ss, d.classes)
        del images
        (staging / "all.npy").unlink()
        meta = {"classes": list(d.classes), "preprocess": p.model_dump(), "counts": report["counts"],
                "synthetic": (data_dir / SYNTHETIC_MARKER).exists()}
        write_json(staging / "meta.json", meta)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(report_path, report)
    if report["leakage"]["summary"]:
        print(f"WARNING: LEAKAGE BETWEEN SPLITS: {report['leakage']['summary']}; details in {report_path}",
              file=sys.stderr)
    return report


def _checks(rows: dict[str, list[tuple[dict, Sample]]], notes: dict, skipped: list[BadImage], d: Data) -> dict:
    """The data report's content from each image's (facts, sample); refuses leakage under on_leak: error."""
    distance = d.near_duplicate_distance
    leaks = find_leaks({split: [{"name": s.name, "patient": s.patient, **f} for f, s in rs]
                        for split, rs in rows.items()}, distance)
    summary = leak_summary(leaks)
    if summary and d.on_leak == "error":
        raise UserError(f"leakage between splits: {summary}; fix the splits or set data.on_leak: warn")
    return {
        "counts": {split: split_counts([s.label for _, s in rs], d.classes) for split, rs in rows.items()},
        "splits_made": notes,
        "images": image_stats([(f, s.label) for rs in rows.values() for f, s in rs], d.classes),
        "skipped": [{"file": str(e.path), "reason": str(e)} for e in skipped],
        "leakage": {"summary": summary, "near_duplicate_distance": distance, "pairs": leaks},
        "shortcut": shortcut_audit({split: [(f, s.label) for f, s in rs] for split, rs in rows.items()}, d.seed,
                                   d.classes),
    }


def _bad(errors: list[BadImage], on_bad_image: str) -> list[BadImage]:
    if errors and on_bad_image == "error":
        raise UserError(f"{errors[0]} (or set data.on_bad_image: skip to skip bad files)")
    return errors


def _decode_all(samples: list[Sample], array_path: Path, p: Preprocess, d: Data, workers: int | None):
    """Every image through the worker into one staging array; returns it, the facts (None for a bad
    image) and the bad images' errors."""
    size = p.img_size
    images = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(samples), size, size))
    facts, bad = [], []
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(p, d.max_pixels))
    try:
        results = pool.map(_process, [s.path for s in samples], chunksize=8)
        for i, (img, info) in enumerate(tqdm(results, total=len(samples), desc="preprocess", unit="img", disable=None)):
            if img is None:
                bad += _bad([BadImage(info, samples[i].path)], d.on_bad_image)
                facts.append(None)
            else:
                images[i] = img
                facts.append(info)
    finally:
        pool.shutdown(cancel_futures=True)  # a refusal should not wait for the rest of the dataset
    return images, facts, bad


def _with_dicom_patient(s: Sample, facts: dict) -> Sample:
    return s if s.patient or not facts.get("patient_id") else replace(s, patient=facts["patient_id"])


def _check_classes(splits: dict[str, list[Sample]], data_dir: Path, classes) -> None:
    for c, name in enumerate(classes):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(f"{data_dir}: no training image of class {name!r}; every class needs some "
                            "(add images of it to the training split, or remove it from data.classes)")
    if any(s.label is None for s in splits["val"]):
        raise UserError(f"{data_dir}: the val split has images without a label; only test may be unlabeled")


def _write_split(staging: Path, split: str, images: np.ndarray, rows: list[int], samples: list[Sample],
                 classes) -> None:
    array_path, index_path = cache_files(staging, split)
    out = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(rows),) + images.shape[1:])
    for start in range(0, len(rows), 1024):
        out[start:start + 1024] = images[rows[start:start + 1024]]
    out.flush()
    del out
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", "label"])
    # A hidden-label test image has an empty label.
    writer.writerows([s.name, "" if s.label is None else class_name(s.label, classes)] for s in samples)
    write_text(index_path, buf.getvalue())


def _swap_in(staging: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

