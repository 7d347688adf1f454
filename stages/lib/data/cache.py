"""Build the preprocessed cache and the data report in one pass over the images.

Order: parse the layout and check every path (nothing decoded yet) -> decode, CLAHE, crop, resize
and hash each image once, in parallel -> make missing splits -> leakage and shortcut checks ->
write the per-split arrays. The cache is assembled beside `out_dir` and swapped in at the end and
the report is written only then, so any refusal leaves the previous outputs untouched.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from stages.lib.audit.checks import data_checks
from stages.lib.audit.data_report import cited_sources
from stages.lib.audit.leakage import exact_hash, perceptual_hash
from stages.lib.audit.licences import licences
from stages.lib.core.errors import UserError
from stages.lib.core.files import umask, write_json, write_text
from stages.lib.core.names import SPLITS, UNLABELED
from stages.lib.core.pool_workers import die_with_parent, ignore_interrupts
from stages.lib.core.progress import progress
from stages.lib.core.provenance import data_hash, stamp
from stages.lib.core.staging import staging_dir
from stages.lib.data import build_timer
from stages.lib.data.cache_writer import Staged, space_needed, swap_in, write_split
from stages.lib.data.dataset import file_records
from stages.lib.data.formats import BadImage, load_gray
from stages.lib.data.layouts import detect_layout, read_layout
from stages.lib.data.records import Sample, check_paths
from stages.lib.data.splits import drop_repeats, ensure_splits, unique_names
from stages.lib.data.transforms import preprocess_image, preprocess_transform
from stages.lib.params.schema import Data, Preprocess
from stages.lib.results.evaluation import predictions_csv

SYNTHETIC_MARKER = "SYNTHETIC"  # file the demo generator leaves in its data folder

_transform = None  # one per worker process
_max_pixels = None


def _init_worker(p: Preprocess, max_pixels: int, parent: int) -> None:
    die_with_parent(parent)
    ignore_interrupts()
    global _transform, _max_pixels
    _transform, _max_pixels = preprocess_transform(p), max_pixels


def _process(path: Path) -> tuple[np.ndarray | None, dict | str, dict[str, float]]:
    """Decode, preprocess and hash one image: (image, facts, seconds per part); a bad image comes back
    as its message, not raised, so the parent can apply data.on_bad_image."""
    start = time.perf_counter()
    try:
        gray, facts = load_gray(path, _max_pixels)
    except BadImage as err:
        return None, str(err), {}
    decoded = time.perf_counter()
    facts.update(exact=exact_hash(gray), phash=perceptual_hash(gray))
    hashed = time.perf_counter()
    image = preprocess_image(gray, _transform)
    return image, facts, {"decode_clahe": decoded - start + time.perf_counter() - hashed, "hashing": hashed - decoded}


def _listed(data_dir: Path, d: Data) -> tuple[str, dict[str, list[Sample]], dict, list[BadImage]]:
    """(layout, the samples per split with repeats dropped and names unique, the repeats, the files refused)."""
    start = time.perf_counter()
    layout = detect_layout(data_dir) if d.layout == "auto" else d.layout
    listed = read_layout(data_dir, layout, d.classes)
    skipped = skip_or_refuse(check_paths([s for ss in listed.values() for s in ss], data_dir), d.on_bad_image)
    given, repeats = drop_repeats(listed, d.classes)
    given = {split: unique_names(samples) for split, samples in given.items()}
    build_timer.seconds["layout"] += time.perf_counter() - start
    return layout, given, repeats, skipped


def _meta(staging: Path, data_dir: Path, p: Preprocess, d: Data, report: dict, splits: dict) -> dict:
    """cache/meta.json's content; stamps the report with its provenance and the data's sources and licences."""
    # The data's DVC hash travels with the cache into every later result; the git state does not,
    # or a new commit alone would change the cache and retrain every model.
    data = data_hash(data_dir)
    report["provenance"] = stamp({"preprocess": p.model_dump(), "data": d.model_dump()}, data)
    report.update(cited_sources(data_dir))  # the study's data (make study-data) cites its datasets
    report["licences"] = licences(data_dir)  # the model cards print them
    return {
        "classes": list(d.classes),
        "preprocess": p.model_dump(),
        "counts": report["counts"],
        "synthetic": (data_dir / SYNTHETIC_MARKER).exists(),
        "data": data,
        "files": file_records(staging, splits),
    }


def _write_shortcut(shortcut_dir: str | os.PathLike, shortcut_probs: dict, splits: dict, classes) -> None:
    """The metadata-only classifier's predictions of val and test, as predictions CSVs."""
    for split, probs in shortcut_probs.items():
        labels = np.array([UNLABELED if s.label is None else s.label for s in splits[split]])
        write_text(
            Path(shortcut_dir) / f"{split}.csv",
            predictions_csv([s.name for s in splits[split]], labels, probs, classes),
        )


def _tell(report: dict, report_path: str | os.PathLike) -> None:
    """What the report found that a user should read now: leakage, duplicates, first frames, transparency,
    patient ids."""
    if report["leakage"]["summary"]:
        print(
            f"WARNING: LEAKAGE BETWEEN SPLITS: {report['leakage']['summary']}; details in {report_path}",
            file=sys.stderr,
        )
    if report["duplicates"]["summary"]:
        print(
            f"note: duplicates within splits: {report['duplicates']['summary']}; details in {report_path}",
            file=sys.stderr,
        )
    for key in ("first_frame_only", "transparency", "patient_ids_differing_by_case"):
        if report[key]["summary"]:
            print(f"note: {report[key]['summary']}; details in {report_path} ({key})", file=sys.stderr)


# params: dvc.yaml's three paths (data, cache, report), params' two sections, and two options with
# defaults (the worker count, where the shortcut's predictions go) that tests and bench.scale set.
def build_cache(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    report_path: str | os.PathLike,
    p: Preprocess,
    d: Data,
    workers: int | None = None,
    shortcut_dir: str | os.PathLike | None = None,
) -> dict:
    """Preprocess the dataset under `data_dir` into `out_dir` and write the data report (and, into
    `shortcut_dir`, the metadata-only classifier's predictions of val and test).

    `p` is params.yaml's `preprocess` section, `d` its `data` section. Returns the report.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    layout, given, repeats, skipped = _listed(data_dir, d)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    missing = {e.path for e in skipped}
    todo = [s for ss in given.values() for s in ss if s.path not in missing]
    with staging_dir(out_dir, 0o777 & ~umask()) as staging, space_needed(out_dir, len(todo), p.img_size):
        with build_timer.timed("decode_wall"):
            images, facts, bad = decode_all(todo, staging / "all.npy", p, d, workers)
        skipped += bad
        # (name, path) identifies an image: equal keys in two splits are the same file.
        row_of = {(s.name, s.path): i for i, s in enumerate(todo) if facts[i] is not None}
        splits = {
            split: [_with_dicom_patient(s, facts[row_of[s.name, s.path]]) for s in ss if (s.name, s.path) in row_of]
            for split, ss in given.items()
        }
        splits, notes = ensure_splits(splits, d)
        _check_not_empty(splits, data_dir, skipped)
        _check_classes(splits, data_dir, d.classes)
        rows = {split: [(facts[row_of[s.name, s.path]], s) for s in ss] for split, ss in splits.items()}
        checks, shortcut_probs = data_checks(rows, notes, skipped, repeats, d)
        report = {"layout": layout, **checks}
        start = time.perf_counter()
        for split, ss in splits.items():
            write_split(
                staging,
                split,
                images,
                [row_of[s.name, s.path] for s in ss],
                ss,
                d.classes,
                [facts[row_of[s.name, s.path]] for s in ss],
            )
        build_timer.seconds["write_cache"] += time.perf_counter() - start
        images.close()
        (staging / "all.npy").unlink()
        write_json(staging / "meta.json", _meta(staging, data_dir, p, d, report, splits))
        swap_in(staging, out_dir)
    if shortcut_dir is not None:
        _write_shortcut(shortcut_dir, shortcut_probs, splits, d.classes)
    with build_timer.timed("report"):
        write_json(report_path, report)
    _tell(report, report_path)
    return report


def _check_not_empty(splits: dict[str, list[Sample]], data_dir: Path, skipped: list[BadImage]) -> None:
    """Every split feeds a later stage (train fits, val picks the epoch, test is scored)."""
    for split in SPLITS:
        if not splits.get(split):
            why = f" after skipping {len(skipped)} bad file(s)" if skipped else ""
            raise UserError(
                f"{data_dir}: the {split} split has no images{why}, and later stages need it; "
                f"fix or add its images, or remove the {split} split so preprocess draws it from train"
            )


def skip_or_refuse(errors: list[BadImage], on_bad_image: str) -> list[BadImage]:
    """The bad images to skip; under data.on_bad_image "error" the first one is refused instead."""
    if errors and on_bad_image == "error":
        raise UserError(f"{errors[0]} (or set data.on_bad_image: skip to skip bad files)")
    return errors


def decode_all(samples: list[Sample], array_path: Path, p: Preprocess, d: Data, workers: int | None):
    """Every image through the worker into one staging array; returns it, the facts (None for a bad
    image) and the bad images' errors."""
    size = p.img_size
    images = Staged(array_path, (len(samples), size, size))
    facts, bad = [], []
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(p, d.max_pixels, os.getpid()))
    try:
        results = pool.map(_process, [s.path for s in samples], chunksize=8)
        with progress(results, total=len(samples), desc="preprocess", unit="img") as bar:
            for i, (img, info, seconds) in enumerate(bar):
                if img is None:
                    bad += skip_or_refuse([BadImage(info, samples[i].path)], d.on_bad_image)
                    facts.append(None)
                    images.append(np.zeros((size, size), np.uint8))  # keeps row i for sample i
                else:
                    build_timer.seconds.update(seconds)
                    images.append(img)
                    facts.append(info)
    except BaseException:
        images.close()
        raise
    finally:
        pool.shutdown(cancel_futures=True)  # a refusal should not wait for the rest of the dataset
    return images, facts, bad


def _with_dicom_patient(s: Sample, facts: dict) -> Sample:
    return s if s.patient or not facts.get("patient_id") else replace(s, patient=facts["patient_id"])


def _check_classes(splits: dict[str, list[Sample]], data_dir: Path, classes) -> None:
    for c, name in enumerate(classes):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(
                f"{data_dir}: no training image of class {name!r}; every class needs some "
                "(add images of it to the training split, or remove it from data.classes)"
            )
    if any(s.label is None for s in splits["val"]):
        raise UserError(f"{data_dir}: the val split has images without a label; only test may be unlabeled")
