"""Data-report entries that say what was done with inputs that are fine but unusual: files with
several frames or pages (the first is used), files with transparent pixels (composited on black), and
patient ids that differ only by letter case (kept apart: ids are compared exactly, docs/data.md)."""

from __future__ import annotations

from stages.lib.core.names import SPLITS


def first_frames(records: dict[str, list[dict]]) -> dict:
    """Files of several frames (multi-frame DICOM) or pages (TIFF), of which the first was used."""
    files = [
        {"split": split, "file": r["name"], "frames": r["frames"]}
        for split in SPLITS
        for r in records.get(split, [])
        if r.get("frames", 1) > 1
    ]
    summary = f"{len(files)} file(s) with several frames or pages: the first of each was used" if files else None
    return {"summary": summary, "files": files}


def transparent_films(records: dict[str, list[dict]]) -> dict:
    """Files with transparent pixels, composited on black (formats.on_black): what a viewer shows."""
    files = [
        {"split": split, "file": r["name"]} for split in SPLITS for r in records.get(split, []) if r.get("transparent")
    ]
    summary = f"{len(files)} file(s) with transparent pixels: composited on black" if files else None
    return {"summary": summary, "files": files}


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
