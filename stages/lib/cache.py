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

from stages.lib.data import cache_files, file_records
from stages.lib.data_report import class_name, image_stats, split_counts
from stages.lib.errors import UserError
from stages.lib.formats import BadImage, load_gray
from stages.lib.io import umask, write_json, write_text
from stages.lib.layouts import (CLASSES, SPLITS, Sample, check_paths, detect_layout, drop_repeats, ensure_splits,
                                read_layout, unique_names)
from stages.lib.leakage import exact_hash, find_leaks, label_conflict, leak_summary, perceptual_hash, same_pixels
from stages.lib.provenance import data_hash, stamp
from stages.lib.shortcut import shortcut_audit
from stages.lib.transforms import preprocess_image, preprocess_transform

SYNTHETIC_MARKER = "SYNTHETIC"  # file the demo generator leaves in its data folder

_transform = None  # one per worker process
_max_pixels = None


def _init_worker(p: dict, max_pixels: int) -> None:
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
                p: dict, d: dict, workers: int | None = None) -> dict:
    """Preprocess the dataset under `data_dir` into `out_dir` and write the data report.

    `p` is params.yaml's `preprocess` section, `d` its `data` section. Returns the report.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    layout = detect_layout(data_dir) if d["layout"] == "auto" else d["layout"]
    listed = read_layout(data_dir, layout)
    skipped = _bad(check_paths([s for ss in listed.values() for s in ss], data_dir), d["on_bad_image"])
    given, repeats = drop_repeats(listed)
    given = {split: unique_names(samples) for split, samples in given.items()}
    samples = [s for split in given.values() for s in split]

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
        _check_not_empty(splits, data_dir, skipped)
        _check_classes(splits, data_dir)
        rows = {split: [(facts[row_of[s.name, s.path]], s) for s in ss] for split, ss in splits.items()}
        report = {"layout": layout, **_checks(rows, notes, skipped, repeats, d)}
        for split, ss in splits.items():
            _write_split(staging, split, images, [row_of[s.name, s.path] for s in ss], ss)
        del images
        (staging / "all.npy").unlink()
        # The data's DVC hash travels with the cache into every later result; the git state does not,
        # or a new commit alone would change the cache and retrain every model.
        data = data_hash(data_dir)
        report["provenance"] = stamp({"preprocess": dict(p), "data": dict(d)}, data)
        meta = {"classes": list(CLASSES), "preprocess": dict(p), "counts": report["counts"],
                "synthetic": (data_dir / SYNTHETIC_MARKER).exists(), "data": data,
                "files": file_records(staging, splits)}
        write_json(staging / "meta.json", meta)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(report_path, report)
    if report["leakage"]["summary"]:
        print(f"WARNING: LEAKAGE BETWEEN SPLITS: {report['leakage']['summary']}; details in {report_path}",
              file=sys.stderr)
    if report["duplicates"]["summary"]:
        print(f"note: duplicates within splits: {report['duplicates']['summary']}; details in {report_path}",
              file=sys.stderr)
    return report


def _checks(rows: dict[str, list[tuple[dict, Sample]]], notes: dict, skipped: list[BadImage],
            repeats: dict[str, list[list[str]]], d: dict) -> dict:
    """The data report's content from each image's (facts, sample); refuses one picture under two
    labels, and leakage under on_leak: error."""
    distance = int(d["near_duplicate_distance"])
    records = {split: [{"name": s.name, "patient": s.patient, "label": s.label, **f} for f, s in rs]
               for split, rs in rows.items()}
    _refuse_label_conflict(records)
    leaks = find_leaks(records, distance)
    summary = leak_summary(leaks)
    if summary and d["on_leak"] == "error":
        raise UserError(f"leakage between splits: {summary}; fix the splits or set data.on_leak: warn")
    return {
        "counts": {split: split_counts([s.label for _, s in rs]) for split, rs in rows.items()},
        "splits_made": notes,
        "images": image_stats([(f, s.label) for rs in rows.values() for f, s in rs]),
        "skipped": [{"file": str(e.path), "reason": str(e)} for e in skipped],
        "leakage": {"summary": summary, "near_duplicate_distance": distance, "pairs": leaks},
        "duplicates": _duplicates(repeats, same_pixels(records)),
        "shortcut": shortcut_audit({split: [(f, s.label) for f, s in rs] for split, rs in rows.items()}, int(d["seed"])),
    }


def _refuse_label_conflict(records: dict[str, list[dict]]) -> None:
    found = label_conflict(records)
    if found:
        (sa, a), (sb, b) = found
        raise UserError(f"{sa} image {a['name']!r} ({CLASSES[a['label']]}) and {sb} image {b['name']!r} "
                        f"({CLASSES[b['label']]}) hold identical pixels under two labels; remove the wrong one")


def _duplicates(repeats: dict[str, list[list[str]]], pixels: dict[str, list[list[str]]]) -> dict:
    """Within each split: files listed twice (kept once) and distinct files with identical pixels (kept)."""
    parts = [f"{split}: " + ", ".join(f"{n} {what}" for n, what in
                                      ((len(repeats.get(split, [])), "file(s) listed twice, kept once"),
                                       (len(pixels.get(split, [])), "group(s) of files with identical pixels")) if n)
             for split in SPLITS if repeats.get(split) or pixels.get(split)]
    return {"summary": "; ".join(parts) or None, "same_file": repeats, "same_pixels": pixels}


def _check_not_empty(splits: dict[str, list[Sample]], data_dir: Path, skipped: list[BadImage]) -> None:
    """Every split feeds a later stage (train fits, val picks the epoch, test is scored)."""
    for split in SPLITS:
        if not splits.get(split):
            why = f" after skipping {len(skipped)} bad file(s)" if skipped else ""
            raise UserError(f"{data_dir}: the {split} split has no images{why}, and later stages need it; "
                            f"fix or add its images, or remove the {split} split so preprocess draws it from train")


def _bad(errors: list[BadImage], on_bad_image: str) -> list[BadImage]:
    if errors and on_bad_image == "error":
        raise UserError(f"{errors[0]} (or set data.on_bad_image: skip to skip bad files)")
    return errors


def _decode_all(samples: list[Sample], array_path: Path, p: dict, d: dict, workers: int | None):
    """Every image through the worker into one staging array; returns it, the facts (None for a bad
    image) and the bad images' errors."""
    size = int(p["img_size"])
    images = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(samples), size, size))
    facts, bad = [], []
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(p, int(d["max_pixels"])))
    try:
        results = pool.map(_process, [s.path for s in samples], chunksize=8)
        for i, (img, info) in enumerate(tqdm(results, total=len(samples), desc="preprocess", unit="img", disable=None)):
            if img is None:
                bad += _bad([BadImage(info, samples[i].path)], d["on_bad_image"])
                facts.append(None)
            else:
                images[i] = img
                facts.append(info)
    finally:
        pool.shutdown(cancel_futures=True)  # a refusal should not wait for the rest of the dataset
    return images, facts, bad


def _with_dicom_patient(s: Sample, facts: dict) -> Sample:
    return s if s.patient or not facts.get("patient_id") else replace(s, patient=facts["patient_id"])


def _check_classes(splits: dict[str, list[Sample]], data_dir: Path) -> None:
    for c, name in enumerate(CLASSES):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(f"{data_dir}: no training image of class {name!r}; every class needs some "
                            "(add images of it to the training split)")
    if any(s.label is None for s in splits["val"]):
        raise UserError(f"{data_dir}: the val split has images without a label; only test may be unlabeled")


def _write_split(staging: Path, split: str, images: np.ndarray, rows: list[int], samples: list[Sample]) -> None:
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
    writer.writerows([s.name, "" if s.label is None else class_name(s.label)] for s in samples)
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

