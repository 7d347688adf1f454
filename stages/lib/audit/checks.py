"""The data report's findings from every film's facts: counts, image statistics, leakage (refused under data.on_leak: error), duplicates, the shortcut audit, first frames, transparency, patient ids; one picture under two labels is refused."""

from __future__ import annotations

from stages.lib.audit.data_report import image_stats, split_counts
from stages.lib.audit.input_notes import first_frames, ids_differing_by_case, transparent_films
from stages.lib.audit.leakage import find_leaks, label_conflict, leak_summary, same_pixels
from stages.lib.audit.shortcut import shortcut_audit
from stages.lib.core.errors import UserError
from stages.lib.core.names import SPLITS
from stages.lib.data import build_timer
from stages.lib.data.formats import BadImage
from stages.lib.data.records import Sample
from stages.lib.params.schema import Data


def data_checks(
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
    _refuse_label_conflict(records, d.classes)
    with build_timer.timed("leakage"):
        leaks = find_leaks(records, distance)
    summary = leak_summary(leaks)
    if summary and d.on_leak == "error":
        raise UserError(f"leakage between splits: {summary}; fix the splits or set data.on_leak: warn")
    with build_timer.timed("shortcut"):
        shortcut, shortcut_probs = shortcut_audit(
            {split: [(f, s.label) for f, s in rs] for split, rs in rows.items()}, d.seed, d.classes
        )
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
            "transparency": transparent_films(records),
            "patient_ids_differing_by_case": ids_differing_by_case(records),
        }, shortcut_probs


def _refuse_label_conflict(records: dict[str, list[dict]], classes) -> None:
    found = label_conflict(records)
    if found:
        (sa, a), (sb, b) = found
        raise UserError(
            f"{sa} image {a['name']!r} ({classes[a['label']]}) and {sb} image {b['name']!r} "
            f"({classes[b['label']]}) hold identical pixels under two labels; remove the wrong one"
        )


def _duplicates(repeats: dict[str, list[list[str]]], pixels: dict[str, list[list[str]]]) -> dict:
    """Within each split: files listed twice (kept once) and distinct files with identical pixels (kept)."""
    parts = [
        f"{split}: "
        + ", ".join(
            f"{n} {what}"
            for n, what in (
                (len(repeats.get(split, [])), "file(s) listed twice, kept once"),
                (len(pixels.get(split, [])), "group(s) of files with identical pixels"),
            )
            if n
        )
        for split in SPLITS
        if repeats.get(split) or pixels.get(split)
    ]
    return {"summary": "; ".join(parts) or None, "same_file": repeats, "same_pixels": pixels}
