"""Stage `preprocess`: data/ (any supported layout) -> cache/ (one uint8 array per split + index)
and the data report (counts, image facts, skipped files, leakage, shortcut audit).

One pass over the images, in this order: read the layout and check every path (nothing decoded yet) ->
decode, CLAHE, crop, resize and hash each image once, in parallel -> make the missing splits and check them
-> audit: one picture under two labels, leakage, duplicates, the metadata-only shortcut, unusual inputs ->
write the per-split arrays and meta.json -> the data's provenance, sources and licences. The cache is
assembled beside `out_dir` and swapped in at the end, and the report is written only then, so any refusal
leaves the previous outputs untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from stages.lib.audit.data_report import (
    cited_sources,
    first_frames,
    ids_differing_by_case,
    image_stats,
    licences,
    split_counts,
    transparent_films,
)
from stages.lib.audit.leakage import (
    duplicates,
    find_leaks,
    fingerprints,
    leak_summary,
    refuse_label_conflict,
    same_pixels,
)
from stages.lib.audit.shortcut import shortcut_audit
from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import umask, write_json, write_text
from stages.lib.core.names import SCORED_SPLITS, SPLITS, UNLABELED
from stages.lib.core.provenance import stamp
from stages.lib.core.staging import staging_dir, swap_in
from stages.lib.data.cache_writer import cache_meta, decode_all, skip_or_refuse, space_needed, timed, write_split
from stages.lib.data.formats import BadImage
from stages.lib.data.layouts import check_layout, detect_layout, read_layout
from stages.lib.data.records import Sample, check_paths
from stages.lib.data.splits import drop_repeats, ensure_splits, unique_names
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Data, Preprocess
from stages.lib.results.evaluation import predictions_csv


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset folder (see README for the layouts)")
    parser.add_argument("--out", required=True, help="cache folder to write")
    parser.add_argument("--report", required=True, help="data report JSON to write")
    parser.add_argument("--headline", required=True, help="headline JSON to write: the number of images")
    parser.add_argument(
        "--shortcut", required=True, help="headline JSON to write: the metadata-only baseline's macro-F1"
    )
    parser.add_argument(
        "--shortcut-predictions",
        required=True,
        help="folder for that baseline's per-image predictions (val.csv, test.csv)",
    )
    args = parser.parse_args()
    cfg = load_params()
    report = build_cache(
        args.data, args.out, args.report, cfg.preprocess, cfg.data, shortcut_dir=args.shortcut_predictions
    )
    write_json(args.headline, headline(report))
    write_json(args.shortcut, shortcut_headline(report))
    for split, counts in report["counts"].items():
        print(f"{split}: {sum(counts.values())} images " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for split in SCORED_SPLITS:
        if split in report["shortcut"]:
            print(
                f"shortcut audit ({split}): file metadata alone reaches macro-F1 "
                f"{report['shortcut'][split]['macro_f1']:.3f}"
            )
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} bad file(s); see {args.report}")


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
    check_layout(d.layout)  # before anything is read
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; put your dataset there (see README) or run make demo")
    layout, given, repeats, skipped = _listed(data_dir, d)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    missing = {e.path for e in skipped}
    todo = [s for ss in given.values() for s in ss if s.path not in missing]
    with staging_dir(out_dir, 0o777 & ~umask()) as staging, space_needed(out_dir, len(todo), p.img_size):
        with timed("decode_wall"):
            images, facts, bad = decode_all(todo, staging, p, d, workers, fingerprints)
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
        checks, shortcut_probs = audit(rows, notes, skipped, repeats, d)
        report = {"layout": layout, **checks}
        with timed("write_cache"):
            for split, ss in splits.items():
                chosen = [row_of[s.name, s.path] for s in ss]
                write_split(staging, split, images, chosen, ss, d.classes, [facts[i] for i in chosen])
        images.discard()
        meta = cache_meta(staging, data_dir, p, d.classes, report["counts"])
        report["provenance"] = stamp({"preprocess": p.model_dump(), "data": d.model_dump()}, meta["data"])
        report.update(cited_sources(data_dir))  # the study's data (make study-data) cites its datasets
        report["licences"] = licences(data_dir)  # the model cards print them
        write_json(staging / "meta.json", meta)
        swap_in(staging, out_dir)
    if shortcut_dir is not None:
        _write_shortcut(shortcut_dir, shortcut_probs, splits, d.classes)
    with timed("report"):
        write_json(report_path, report)
    _tell(report, report_path)
    return report


def _listed(data_dir: Path, d: Data) -> tuple[str, dict[str, list[Sample]], dict, list[BadImage]]:
    """(layout, the samples per split with repeats dropped and names unique, the repeats, the files refused)."""
    with timed("layout"):
        layout = detect_layout(data_dir) if d.layout == "auto" else d.layout
        listed = read_layout(data_dir, layout, d.classes)
        skipped = skip_or_refuse(check_paths([s for ss in listed.values() for s in ss], data_dir), d.on_bad_image)
        given, repeats = drop_repeats(listed, d.classes)
        given = {split: unique_names(samples) for split, samples in given.items()}
    return layout, given, repeats, skipped


def _with_dicom_patient(s: Sample, facts: dict) -> Sample:
    return s if s.patient or not facts.get("patient_id") else replace(s, patient=facts["patient_id"])


def _check_not_empty(splits: dict[str, list[Sample]], data_dir: Path, skipped: list[BadImage]) -> None:
    """Every split feeds a later stage (train fits, val picks the epoch, test is scored)."""
    for split in SPLITS:
        if not splits.get(split):
            why = f" after skipping {len(skipped)} bad file(s)" if skipped else ""
            raise UserError(
                f"{data_dir}: the {split} split has no images{why}, and later stages need it; "
                f"fix or add its images, or remove the {split} split so preprocess draws it from train"
            )


def _check_classes(splits: dict[str, list[Sample]], data_dir: Path, classes) -> None:
    for c, name in enumerate(classes):
        if not any(s.label == c for s in splits["train"]):
            raise UserError(
                f"{data_dir}: no training image of class {name!r}; every class needs some "
                "(add images of it to the training split, or remove it from data.classes)"
            )
    if any(s.label is None for s in splits["val"]):
        raise UserError(f"{data_dir}: the val split has images without a label; only test may be unlabeled")


def audit(
    rows: dict[str, list[tuple[dict, Sample]]],
    notes: dict,
    skipped: list[BadImage],
    repeats: dict[str, list[list[str]]],
    d: Data,
) -> tuple[dict, dict]:
    """The data report's content from each image's (facts, sample), and the shortcut audit's
    probabilities per scored split; refuses one picture under two labels, and leakage under
    on_leak: error."""
    distance = d.near_duplicate_distance
    records = {
        split: [{"name": s.name, "patient": s.patient, "label": s.label, **f} for f, s in rs]
        for split, rs in rows.items()
    }
    refuse_label_conflict(records, d.classes)
    with timed("leakage"):
        leaks = find_leaks(records, distance)
    summary = leak_summary(leaks)
    if summary and d.on_leak == "error":
        raise UserError(f"leakage between splits: {summary}; fix the splits or set data.on_leak: warn")
    with timed("shortcut"):
        shortcut, shortcut_probs = shortcut_audit(
            {split: [(f, s.label) for f, s in rs] for split, rs in rows.items()}, d.seed, d.classes
        )
    with timed("report"):
        return {
            "counts": {split: split_counts([s.label for _, s in rs], d.classes) for split, rs in rows.items()},
            "splits_made": notes,
            "images": image_stats([(f, s.label) for rs in rows.values() for f, s in rs], d.classes),
            "skipped": [{"file": str(e.path), "reason": str(e)} for e in skipped],
            "leakage": {"summary": summary, "near_duplicate_distance": distance, "pairs": leaks},
            "duplicates": duplicates(repeats, same_pixels(records)),
            "shortcut": shortcut,
            "first_frame_only": first_frames(records),
            "transparency": transparent_films(records),
            "patient_ids_differing_by_case": ids_differing_by_case(records),
        }, shortcut_probs


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


def headline(report: dict) -> dict:
    """The data's one headline number: how many images the cache holds."""
    return {"images": sum(sum(c.values()) for c in report["counts"].values())}


def shortcut_headline(report: dict) -> dict:
    """The metadata-only baseline's macro-F1 per scored split, comparable to the models' headlines."""
    return {split: {"macro_f1": s["macro_f1"]} for split, s in report["shortcut"].items() if split != "features"}


if __name__ == "__main__":
    main()
