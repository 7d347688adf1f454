"""Scoring predictions: metrics per split, and the per-image predictions beside them.

Evaluate (one run), combine (a backbone's seeds) and ensemble (every run) all end in
`write_and_score`, so their files and numbers have one shape.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from stages.lib.core.csv_rows import RowWriter
from stages.lib.core.errors import UserError
from stages.lib.core.files import write_text
from stages.lib.core.names import SCORED_SPLITS, UNLABELED
from stages.lib.params.schema import Evaluate
from stages.lib.results.metrics import split_metrics


def write_and_score(
    outputs: dict[str, tuple[list[str], np.ndarray, np.ndarray]], classes, out_dir: Path, e: Evaluate
) -> dict:
    """`outputs[split] = (names, labels, probs)` for each scored split -> <split>.csv in `out_dir`;
    returns the metrics per split (None, with a note, when a split's labels are hidden)."""
    write_predictions(outputs, classes, out_dir)
    report = {}
    for split, (_, labels, probs) in outputs.items():
        report[split] = score_split(labels, probs, classes, e, split)
        if report[split] is None:
            report[f"{split}_note"] = "labels hidden: predictions written, not scored"
    return report


def shown_split_of(report: dict) -> str:
    """The split a model's subgroups, figures, card and lungs-hidden block show: test, or val when test
    labels are hidden (its metrics are None)."""
    return "test" if report.get("test") is not None else "val"


def write_predictions(outputs: dict[str, tuple[list[str], np.ndarray, np.ndarray]], classes, out_dir: Path) -> None:
    """`outputs[key] = (names, labels, probs)` -> `out_dir`/<key>.csv (key: a split, or external/<name>)."""
    for key, (names, labels, probs) in outputs.items():
        write_text(Path(out_dir) / f"{key}.csv", predictions_csv(names, labels, probs, classes))


def score_split(labels: np.ndarray, probs: np.ndarray, classes, e: Evaluate, split: str) -> dict | None:
    """Metrics of the labelled images of `split` (`e`: params' evaluate); None if none is labelled.

    A hidden-label test set still gets predictions; it just cannot be scored.
    """
    known = labels != UNLABELED
    if not known.any():
        return None
    return split_metrics(
        labels[known], probs[known], classes, e.bootstrap_resamples, e.seed, e.calibration_bins, where=split
    )


def read_runs(folders: list[Path], split: str, classes) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, labels, probabilities [runs, N, C]) of one split from several runs' predictions folders,
    refusing runs scored on other images (they would be averaged image by image)."""
    runs = [read_predictions(Path(folder) / f"{split}.csv", classes) for folder in folders]
    names, labels, _ = runs[0]
    for folder, (other_names, other_labels, _) in zip(folders, runs):
        if other_names != names or (other_labels != labels).any():
            raise UserError(
                f"{folder}/{split}.csv lists other images than {folders[0]}/{split}.csv; rerun evaluate (dvc repro)"
            )
    return names, labels, np.stack([p for _, _, p in runs])


def score_mean(folders: list[Path], classes, out_dir: Path, e: Evaluate) -> tuple[dict, dict]:
    """An ensemble: the mean of several runs' probabilities, image by image (each row still sums to 1),
    written to `out_dir`/<split>.csv and scored for each scored split. Returns the metrics per split
    and each split's (labels, probabilities [runs, N, C])."""
    outputs, runs = {}, {}
    for split in SCORED_SPLITS:
        names, labels, probs = read_runs(folders, split, classes)
        outputs[split], runs[split] = (names, labels, probs.mean(0)), (labels, probs)
    return write_and_score(outputs, classes, out_dir, e), runs


def mean_of_runs(labels_runs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probs [runs, N, C]) -> (labels, the runs' mean probabilities [N, C]): their ensemble."""
    labels, runs = labels_runs
    return labels, runs.mean(0)


# --- per-image predictions CSV: filename,true_label,predicted_label,prob_<class>... ---------------


def predictions_csv(names, labels: np.ndarray, probs: np.ndarray, classes) -> str:
    buf = io.StringIO()
    writer = RowWriter(buf)
    writer.writerow(["filename", "true_label", "predicted_label", *[f"prob_{c}" for c in classes]])
    for name, y, p in zip(names, labels, probs):
        true = classes[y] if y != UNLABELED else ""  # hidden label
        writer.writerow([name, true, classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return buf.getvalue()


def read_predictions(path: str | os.PathLike, classes) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(file names, label indices, probabilities) from a predictions CSV."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run the evaluate stage first (dvc repro)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["filename"] for r in rows]
    labels = np.array([classes.index(r["true_label"]) if r["true_label"] else UNLABELED for r in rows], dtype=np.int64)
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    return names, labels, probs
