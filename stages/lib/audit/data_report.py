"""The data report's descriptive parts: counts per split and class, image facts per class."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from stages.lib.core.names import UNLABELED_CLASS

ASSEMBLY = "assembly.json"  # in a data folder that `make study-data` assembled (stages/lib/study/assembly.py)


def class_name(label: int | None, classes) -> str:
    return UNLABELED_CLASS if label is None else classes[label]


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


def headline(report: dict) -> dict:
    """The data's one headline number: how many images the cache holds."""
    return {"images": sum(sum(c.values()) for c in report["counts"].values())}


def shortcut_headline(report: dict) -> dict:
    """The metadata-only baseline's macro-F1 per scored split, comparable to the models' headlines."""
    return {split: {"macro_f1": s["macro_f1"]} for split, s in report["shortcut"].items() if split != "features"}


def cited_sources(data_dir) -> dict:
    """{"sources": [...]}: the datasets an assembled data folder came from, with citation, DOI,
    licence, URL and films kept, for the data report to cite; {} for any other data folder."""
    path = Path(data_dir) / ASSEMBLY
    if not path.is_file():
        return {}
    sources = json.loads(path.read_text(encoding="utf-8"))["sources"]
    keys = ("citation", "doi", "licence", "url", "films_kept")
    return {"sources": [{"dataset": name, **{k: s.get(k) for k in keys}} for name, s in sources.items()]}
