"""The study's data set from the films of its two sources (stages/assemble.py tells the order): exact
duplicates dropped, per-class caps drawn by whole patients, a seeded patient-grouped split, written as the
manifest layout that preprocess reads (manifest.csv), with SOURCES.csv (each film's origin and licence),
and what was kept and left out, and why (assembly.json). Same sources and params, same bytes
(docs/study-data.md)."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from stages.lib.audit.data_report import ASSEMBLY, SOURCES
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.layouts import MANIFEST, MANIFEST_COLUMNS
from stages.lib.data.records import Sample
from stages.lib.data.splits import split_off
from stages.lib.study.sources import DATASETS, Film

MARKER = ASSEMBLY  # what was kept and why; also says that the folder is ours to replace


def drop_duplicates(films: list[Film]) -> tuple[list[Film], list[dict]]:
    """One film per set of identical bytes (the first by path); a set whose copies disagree on the
    class is dropped whole, since neither label can be trusted."""
    by_hash: dict[str, list[Film]] = defaultdict(list)
    for f in sorted(films, key=lambda f: f.path):
        by_hash[f.sha256].append(f)
    kept, dropped = [], []
    for copies in by_hash.values():
        if len({f.label for f in copies}) > 1:
            dropped.append(
                {
                    "sha256": copies[0].sha256,
                    "kept": None,
                    "dropped": [f.path for f in copies],
                    "why": "identical films with different classes",
                }
            )
        else:
            kept.append(copies[0])
            if len(copies) > 1:
                dropped.append(
                    {
                        "sha256": copies[0].sha256,
                        "kept": copies[0].path,
                        "dropped": [f.path for f in copies[1:]],
                        "why": "identical film",
                    }
                )
    return sorted(kept, key=lambda f: f.path), dropped


def cap(films: list[Film], caps: dict[str, int | None], seed: int) -> list[Film]:
    """At most caps[class] films of each class, drawn as whole patients in a seeded order (a patient
    who would overflow the cap is passed over for a smaller one)."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in STUDY_CLASSES:
        mine = [f for f in films if f.label == label]
        limit = caps.get(label)
        if limit is None or len(mine) <= limit:
            kept += mine
            continue
        patients: dict[str, list[Film]] = defaultdict(list)
        for f in mine:
            patients[f.patient].append(f)
        total = 0
        for p in rng.permutation(sorted(patients)).tolist():
            if total + len(patients[p]) <= limit:
                kept += patients[p]
                total += len(patients[p])
    return sorted(kept, key=lambda f: f.path)


def split(films: list[Film], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """{path: split}: test, then val from the rest, stratified by class, no patient in two splits
    (splits.split_off: scikit-learn's StratifiedGroupKFold)."""
    samples = [Sample(Path(f.path), f.path, STUDY_CLASSES.index(f.label), f.patient) for f in films]
    rest, test = split_off(samples, test_fraction, seed)
    train, val = split_off(rest, val_fraction / (1 - test_fraction), seed)
    return {s.name: name for name, part in (("train", train), ("val", val), ("test", test)) for s in part}


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(staging: Path, kept: list[Film], splits: dict[str, str], origins: dict[str, tuple]) -> None:
    """manifest.csv, and SOURCES.csv: each film's source (URL, and the git commit of a `dvc import`)."""
    manifest = [[f.path, f.label, splits[f.path], f.patient] for f in kept]  # in MANIFEST_COLUMNS' order
    (staging / MANIFEST).write_text(_csv(list(MANIFEST_COLUMNS), manifest), encoding="utf-8")
    rows = [
        [f.path, f.dataset, f.original, *origins[f.dataset], DATASETS[f.dataset].doi, DATASETS[f.dataset].licence]
        + [f.sha256]
        for f in kept
    ]
    header = ["path", "dataset", "original", "url", "commit", "doi", "licence", "sha256"]
    (staging / SOURCES).write_text(_csv(header, rows), encoding="utf-8")


# params: the result of each step of the assembly, summarised together.
def summary(sources, pins, origins, read, kept, splits, duplicates, left_out, unique, a) -> dict:
    counts = {
        s: dict(
            sorted(
                Counter(f.label for f in kept if splits[f.path] == s).items(), key=lambda kv: STUDY_CLASSES.index(kv[0])
            )
        )
        for s in ("train", "val", "test")
    }
    return {
        "sources": {
            n: {
                "file": str(p),
                **pins[n],
                "url": origins[n][0],
                "doi": DATASETS[n].doi,
                "licence": DATASETS[n].licence,
                "citation": DATASETS[n].citation,
                "films_read": sum(f.dataset == n for f in read),
                "films_kept": sum(f.dataset == n for f in kept),
            }
            for n, p in sources.items()
        },
        "params": a.model_dump(),
        "counts": counts,
        "left_out": {
            "hannover": {why: len(paths) for why, paths in left_out.items()},
            "duplicates": sum(len(d["dropped"]) for d in duplicates),
            "over the per-class caps": len(unique) - len(kept),
        },
        "duplicates": duplicates,
        "hannover_left_out": left_out,
    }
