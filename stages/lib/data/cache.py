"""Build the preprocessed cache and the data report in one pass over the images.

Order: parse the layout and check every path (nothing decoded yet) -> decode, CLAHE, crop, resize
and hash each image once, in parallel -> make missing splits -> leakage and shortcut checks ->
write the per-split arrays. The cache is assembled beside `out_dir` and swapped in at the end and
the report is written only then, so any refusal leaves the previous outputs untouched.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stages.lib.params.schema import Data, Preprocess
from stages.lib.core.csv_rows import RowWriter
from stages.lib.data import build_timer
from stages.lib.data.dataset import cache_files, file_records
from stages.lib.core.names import SPLITS, UNLABELED
from stages.lib.audit.data_report import cited_sources, class_name, image_stats, split_counts
from stages.lib.core.errors import UserError
from stages.lib.results.evaluation import predictions_csv
from stages.lib.data.formats import BadImage, load_gray
from stages.lib.audit.input_notes import first_frames, ids_differing_by_case
from stages.lib.core.files import umask, write_json, write_text
from stages.lib.data.layouts import BUILT_IN_METADATA, check_paths, detect_layout, read_layout
from stages.lib.data.records import Sample
from stages.lib.data.splits import drop_repeats, ensure_splits, unique_names
from stages.lib.audit.leakage import exact_hash, find_leaks, label_conflict, leak_summary, perceptual_hash, same_pixels
from stages.lib.core.pool_workers import die_with_parent
from stages.lib.audit.licences import licences
from stages.lib.core.provenance import data_hash, stamp
from stages.lib.audit.shortcut import shortcut_audit
from stages.lib.core.staging import staging_dir
from stages.lib.data.transforms import preprocess_image, preprocess_transform

SYNTHETIC_MARKER = "SYNTHETIC"  # file the demo generator leaves in its data folder

_transform = None  # one per worker process
_max_pixels = None
def _init_worker(p: Preprocess, max_pixels: int, parent: int) -> None:
    die_with_parent(parent)
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


def build_cache(data_dir: str | os.PathLike, out_dir: str | os.PathLike, report_path: str | os.PathLike,
                p: Preprocess, d: Data, workers: int | None = None,
                shortcut_dir: str | os.PathLike | None = None) -> dict:
    """Preprocess the dataset under `data_dir` into `out_dir` and write the data report (and, into
    `shortcut_dir`, the metadata-only classifier's predictions of val and test).

    `p` is params.yaml's `preprocess` section, `d` its `data` section. Returns the report.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    start = time.perf_counter()
    layout = detect_layout(data_dir) if d.layout == "auto" else d.layout
    listed = read_layout(data_dir, layout, d.classes)
    skipped = _bad(check_paths([s for ss in listed.values() for s in ss], data_dir), d.on_bad_image)
    given, repeats = drop_repeats(listed, d.classes)
    given = {split: unique_names(samples) for split, samples in given.items()}
    samples = [s for split in given.values() for s in split]
    build_timer.seconds["layout"] += time.perf_counter() - start

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out_dir, 0o777 & ~umask()) as staging:
        missing = {e.path for e in skipped}
        todo = [s for s in samples if s.path not in missing]
        with build_timer.timed("decode_wall"):
            images, facts, bad = _decode_all(todo, staging / "all.npy", p, d, workers)
        skipped += bad
        # (name, path) identifies an image: equal keys in two splits are the same file.
        row_of = {(s.name, s.path): i for i, s in enumerate(todo) if facts[i] is not None}
        splits = {split: [_with_dicom_patient(s, facts[row_of[s.name, s.path]]) for s in ss if (s.name, s.path) in row_of]
                  for split, ss in given.items()}
        splits, notes = ensure_splits(splits, d)
        _check_not_empty(splits, data_dir, skipped)
        _check_classes(splits, data_dir, d.classes)
        rows = {split: [(facts[row_of[s.name, s.path]], s) for s in ss] for split, ss in splits.items()}
        checks, shortcut_probs = _checks(rows, notes, skipped, repeats, d)
        report = {"layout": layout, **checks}
        start = time.perf_counter()
        for split, ss in splits.items():
            _write_split(staging, split, images, [row_of[s.name, s.path] for s in ss], ss, d.classes,
                         [facts[row_of[s.name, s.path]] for s in ss])
        build_timer.seconds["write_cache"] += time.perf_counter() - start
        images.close()
        (staging / "all.npy").unlink()
        # The data's DVC hash travels with the cache into every later result; the git state does not,
        # or a new commit alone would change the cache and retrain every model.
        data = data_hash(data_dir)
        report["provenance"] = stamp({"preprocess": p.model_dump(), "data": d.model_dump()}, data)
        report.update(cited_sources(data_dir))  # the study's data (make study-data) cites its datasets
        report["licences"] = licences(data_dir)  # the model cards print them
        meta = {"classes": list(d.classes), "preprocess": p.model_dump(), "counts": report["counts"],
                "synthetic": (data_dir / SYNTHETIC_MARKER).exists(), "data": data,
                "files": file_records(staging, splits)}
        write_json(staging / "meta.json", meta)
        _swap_in(staging, out_dir)
    if shortcut_dir is not None:
        for split, probs in shortcut_probs.items():
            labels = np.array([UNLABELED if s.label is None else s.label for s in splits[split]])
            write_text(Path(shortcut_dir) / f"{split}.csv",
                       predictions_csv([s.name for s in splits[split]], labels, probs, d.classes))
    with build_timer.timed("report"):
        write_json(report_path, report)
    if report["leakage"]["summary"]:
        print(f"WARNING: LEAKAGE BETWEEN SPLITS: {report['leakage']['summary']}; details in {report_path}",
              file=sys.stderr)
    if report["duplicates"]["summary"]:
        print(f"note: duplicates within splits: {report['duplicates']['summary']}; details in {report_path}",
              file=sys.stderr)
    for key in ("first_frame_only", "patient_ids_differing_by_case"):
        if report[key]["summary"]:
            print(f"note: {report[key]['summary']}; details in {report_path} ({key})", file=sys.stderr)
    return report


def _checks(rows: dict[str, list[tuple[dict, Sample]]], notes: dict, skipped: list[BadImage],
            repeats: dict[str, list[list[str]]], d: Data) -> tuple[dict, dict]:
    """The data report's content from each image's (facts, sample), and the shortcut audit's
    probabilities per scored split; refuses one picture under two labels, and leakage under
    on_leak: error."""
    distance = d.near_duplicate_distance
    records = {split: [{"name": s.name, "patient": s.patient, "label": s.label, **f} for f, s in rs]
               for split, rs in rows.items()}
    _refuse_label_conflict(records, d.classes)
    with build_timer.timed("leakage"):
        leaks = find_leaks(records, distance)
    summary = leak_summary(leaks)
    if summary and d.on_leak == "error":
        raise UserError(f"leakage between splits: {summary}; fix the splits or set data.on_leak: warn")
    with build_timer.timed("shortcut"):
        shortcut, shortcut_probs = shortcut_audit({split: [(f, s.label) for f, s in rs] for split, rs in rows.items()},
                                                  d.seed, d.classes)
    with build_timer.timed("report"):
        return {
            "counts": {split: split_counts([s.label for _, s in rs], d.classes) for split, rs in rows.items()},
            "splits_made": notes,
            "images": image_stats([(f, s.label) for rs in rows.values() for f, s in rs], d.classes),
            "skipped": [{"file": str(e.path), "reason": str(e)} for e in skipped],
            "leakage": {"summary": summary, "near_duplicate_distance": distance, "pairs": leaks},
            "duplicates": _duplicates(repeats, same_pixels(records)),
            "shortcut": shortcut,
            "first_frame_only": first_frames(records),
            "patient_ids_differing_by_case": ids_differing_by_case(records),
        }, shortcut_probs


def _refuse_label_conflict(records: dict[str, list[dict]], classes) -> None:
    found = label_conflict(records)
    if found:
        (sa, a), (sb, b) = found
        raise UserError(f"{sa} image {a['name']!r} ({classes[a['label']]}) and {sb} image {b['name']!r} "
                        f"({classes[b['label']]}) hold identical pixels under two labels; remove the wrong one")


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


def _decode_all(samples: list[Sample], array_path: Path, p: Preprocess, d: Data, workers: int | None):
    """Every image through the worker into one staging array; returns it, the facts (None for a bad
    image) and the bad images' errors."""
    size = p.img_size
    images = _Staged(array_path, (len(samples), size, size))
    facts, bad = [], []
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(p, d.max_pixels, os.getpid()))
    try:
        results = pool.map(_process, [s.path for s in samples], chunksize=8)
        for i, (img, info, seconds) in enumerate(tqdm(results, total=len(samples), desc="preprocess", unit="img", disable=None)):
            if img is None:
                bad += _bad([BadImage(info, samples[i].path)], d.on_bad_image)
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


def _npy_header(f, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                              "fortran_order": False, "shape": shape})


class _Staged:
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


def _with_dicom_patient(s: Sample, facts: dict) -> Sample:
    return s if s.patient or not facts.get("patient_id") else replace(s, patient=facts["patient_id"])


def _check_classes(splits: dict[str, list[Sample]], data_dir: Path, classes) -> None:
    for c, name in enumerate(classes):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(f"{data_dir}: no training image of class {name!r}; every class needs some "
                            "(add images of it to the training split, or remove it from data.classes)")
    if any(s.label is None for s in splits["val"]):
        raise UserError(f"{data_dir}: the val split has images without a label; only test may be unlabeled")


def _write_split(staging: Path, split: str, images: _Staged, rows: list[int], samples: list[Sample],
                 classes, facts: list[dict]) -> None:
    array_path, index_path = cache_files(staging, split)
    with open(array_path, "wb") as out:  # plain writes, not a memory map: see _Staged
        _npy_header(out, (len(rows),) + images.shape[1:])
        for start in range(0, len(rows), 256):  # 16 MB at 256 px
            out.write(images[rows[start:start + 256]])
    buf = io.StringIO()
    writer = RowWriter(buf)
    # Film metadata after the label: the built-in file facts, then a manifest's extra columns
    # (stages/lib/results/subgroups.py reads them). A hidden-label test image has an empty label.
    extra = [c for c, _ in samples[0].metadata] if samples else []
    writer.writerow(["filename", "label", *BUILT_IN_METADATA, *extra])
    writer.writerows([s.name, "" if s.label is None else class_name(s.label, classes),
                      *[f[k] for k in BUILT_IN_METADATA], *[v for _, v in s.metadata]] for s, f in zip(samples, facts))
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

