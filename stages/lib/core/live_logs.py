"""DVCLive's logs as the train stage leaves them, read here and nowhere else: one TSV per metric,
`<live>/plots/metrics/<split>/<metric>.tsv`, with columns timestamp, step and the metric.

Standard library only: the GPU check reads them on a bare Python before any wheel is unpacked.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

Rows = list[list[str]]


def metric_path(live_dir: str | os.PathLike, split: str, metric: str) -> Path:
    return Path(live_dir) / "plots" / "metrics" / split / f"{metric}.tsv"


def metric_files(live_dir: str | os.PathLike) -> list[Path]:
    """Every metric's TSV under the log, nested metric names included."""
    return sorted((Path(live_dir) / "plots" / "metrics").glob("**/*.tsv"))


def read_rows(path: str | os.PathLike) -> Rows:
    """The TSV's rows as text, its header first."""
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def column(live_dir: str | os.PathLike, metric: str, split: str = "train") -> list[float]:
    """One metric's values, step by step ([] when it was not logged)."""
    path = metric_path(live_dir, split, metric)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(row[metric]) for row in csv.DictReader(f, delimiter="\t")]


def history(live_dir: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{split: {metric: [(step, value), ...]}} for the metrics logged directly under a split."""
    base = Path(live_dir) / "plots" / "metrics"
    out: dict[str, dict[str, list]] = {}
    for tsv in sorted(base.glob("*/*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        out.setdefault(tsv.parent.name, {})[tsv.stem] = [(int(r["step"]), float(r[tsv.stem])) for r in rows]
    return out


def rows_up_to(rows: Rows, last_step: int) -> Rows:
    """The header and the rows logged at or before `last_step`."""
    step = rows[0].index("step") if rows else 0
    return rows[:1] + [r for r in rows[1:] if int(r[step]) <= last_step]


def as_tsv(rows: Rows) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)
