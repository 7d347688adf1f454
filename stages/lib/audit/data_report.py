"""The data report's descriptive parts: counts per split and class, image facts per class; what was done
with inputs that are fine but unusual (several frames or pages: the first is used; transparent pixels:
composited on black; patient ids that differ only by letter case: kept apart, ids are compared exactly,
docs/data.md); and the sources the data cites and their licences."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from stages.lib.core.names import SPLITS, UNLABELED_CLASS, class_name

ASSEMBLY = "assembly.json"  # in a data folder that `make study-data` assembled (stages/lib/study/assembly.py)
# Beside the data (as the course layout's real sample ships it): one row per film, with a `license` (or
# `licence`) column; counted per licence for the data report, and the model cards print them. The set
# `make study-data` assembles writes one too (stages/lib/study/assembly.py: each film's source, path
# there, URL, DOI, licence, sha256).
SOURCES = "SOURCES.csv"


def split_counts(labels: list[int | None], classes) -> dict:
    """{class: n} with every class (0 when absent), plus `unlabeled` only when there are such images."""
    n = Counter(class_name(y, classes) for y in labels)
    out = {c: n[c] for c in classes}
    if n[UNLABELED_CLASS]:
        out[UNLABELED_CLASS] = n[UNLABELED_CLASS]
    return out


def _spread(values: list[float]) -> dict:
    return {"min": int(np.min(values)), "median": float(np.median(values)), "max": int(np.max(values))}


def image_stats(rows: list[tuple[dict, int | None]], classes) -> dict:
    """Per class: counts of formats, channels, bit depths and their sources; min/median/max width, height,
    file size."""
    by_class: dict[str, list[dict]] = {}
    for facts, label in rows:
        by_class.setdefault(class_name(label, classes), []).append(facts)
    out = {}
    for name in [c for c in (*classes, UNLABELED_CLASS) if c in by_class]:
        facts = by_class[name]
        out[name] = {
            "formats": dict(sorted(Counter(f["format"] for f in facts).items())),
            "channels": {str(k): v for k, v in sorted(Counter(f["channels"] for f in facts).items())},
            "bit_depth": {str(k): v for k, v in sorted(Counter(f["bit_depth"] for f in facts).items())},
            # what each film was scaled to 8 bits by (formats.py), e.g. "image maximum (12 bits)"
            "scaled_by": dict(sorted(Counter(f"{f['scaled_by']} ({f['bit_depth']} bits)" for f in facts).items())),
            **{k: _spread([f[k] for f in facts]) for k in ("width", "height", "file_bytes")},
        }
    return out


def cited_sources(data_dir) -> dict:
    """{"sources": [...]}: the datasets an assembled data folder came from, with citation, DOI,
    licence, URL and films kept, for the data report to cite; {} for any other data folder."""
    path = Path(data_dir) / ASSEMBLY
    if not path.is_file():
        return {}
    sources = json.loads(path.read_text(encoding="utf-8"))["sources"]
    keys = ("citation", "doi", "licence", "url", "films_kept")
    return {"sources": [{"dataset": name, **{k: s.get(k) for k in keys}} for name, s in sources.items()]}


def licences(data_dir: str | os.PathLike) -> dict[str, int]:
    """{licence text: number of films} from <data>/SOURCES.csv; {} when the data records none."""
    path = Path(data_dir) / SOURCES
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = next((c for c in ("license", "licence") if rows and c in rows[0]), None)
    return dict(Counter(r[column] for r in rows if r[column]).most_common()) if column else {}


# --- notes on unusual inputs ------------------------------------------------------------------------


def first_frames(records: dict[str, list[dict]]) -> dict:
    """Files of several frames (multi-frame DICOM) or pages (TIFF), of which the first was used."""
    return _files_noted(
        records, lambda r: r.get("frames", 1) > 1, "several frames or pages: the first of each was used", ("frames",)
    )


def transparent_films(records: dict[str, list[dict]]) -> dict:
    """Files with transparent pixels, composited on black (formats.on_black): what a viewer shows."""
    return _files_noted(records, lambda r: r.get("transparent"), "transparent pixels: composited on black")


def _files_noted(records: dict[str, list[dict]], noted, what: str, keys: tuple[str, ...] = ()) -> dict:
    """{"summary": "<n> file(s) with <what>" (None when none), "files": [{split, file, *keys}, ...]}: the
    records for which `noted` holds, split by split."""
    files = [
        {"split": split, "file": r["name"], **{k: r[k] for k in keys}}
        for split in SPLITS
        for r in records.get(split, [])
        if noted(r)
    ]
    return {"summary": f"{len(files)} file(s) with {what}" if files else None, "files": files}


def ids_differing_by_case(records: dict[str, list[dict]]) -> dict:
    """Groups of patient ids equal but for letter case ('P12', 'p12'), with the splits of each
    spelling. They count as different patients in the leakage check, so a user can see and unify them."""
    spellings: dict[str, dict[str, set[str]]] = {}
    for split in SPLITS:
        for r in records.get(split, []):
            if r.get("patient"):
                spellings.setdefault(r["patient"].casefold(), {}).setdefault(r["patient"], set()).add(split)
    groups = [
        {spelling: [s for s in SPLITS if s in where] for spelling, where in sorted(group.items())}
        for _, group in sorted(spellings.items())
        if len(group) > 1
    ]
    summary = (
        (
            f"{len(groups)} patient id(s) spelled with different letter case, e.g. "
            f"{' / '.join(groups[0])}; compared exactly, so counted as different patients"
        )
        if groups
        else None
    )
    return {"summary": summary, "groups": groups}
