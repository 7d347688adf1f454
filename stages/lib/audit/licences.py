"""The licences of the data's sources, where the dataset says them: a `SOURCES.csv` beside the data
(as the course layout's real sample ships it) with a `license` (or `licence`) column, one row per
film. Counted per licence for the data report; the model cards print them."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

SOURCES = "SOURCES.csv"


def licences(data_dir: str | os.PathLike) -> dict[str, int]:
    """{licence text: number of films} from <data>/SOURCES.csv; {} when the data records none."""
    path = Path(data_dir) / SOURCES
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = next((c for c in ("license", "licence") if rows and c in rows[0]), None)
    return dict(Counter(r[column] for r in rows if r[column]).most_common()) if column else {}
