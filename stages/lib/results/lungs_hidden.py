"""Each model scored on the same films with the lungs hidden (params' `hide_lungs` box set to one grey level;
stages/lib/data/transforms.py): how much of each class it still finds without them.

A network that reads the lungs loses a class's recall when they are hidden; one that keeps most of it
finds that class from the rest of the film (body size, devices, markers, the scanner's look): with one
hospital per class, that is the hospital, not the disease. Evaluate scores one run, combine and ensemble
the mean of their runs' predictions (`predictions/<run>/lungs_hidden/<split>.csv`), the report the same.
"""

from __future__ import annotations

import numpy as np

from stages.lib.core.names import UNLABELED
from stages.lib.params.schema import Evaluate, HideLungs
from stages.lib.results.comparisons import paired_difference
from stages.lib.results.evaluation import read_runs
from stages.lib.results.metrics import METRICS, bootstrap_ci, macro_f1

KEY = "lungs_hidden"
# "Most of its recall": a class that keeps at least this share of its recall with the lungs hidden, and of
# its margin (its recall minus the share of other classes' films called it, Youden's J: 0 for a class that
# is merely every film's answer), is read from outside the lungs.
KEEP = 0.5


def predictions_split(split: str) -> str:
    """The model's predictions of `split` with the lungs hidden, beside its val.csv and test.csv."""
    return f"{KEY}/{split}"


# params: the split's name, its labels, the model's probabilities with and without the lungs, then how to score.
def block(
    split: str, labels: np.ndarray, probs: np.ndarray, hidden: np.ndarray, classes, e: Evaluate, h: HideLungs
) -> dict:
    """The metrics file's `lungs_hidden` block: macro-F1 with the lungs hidden (95% CI) beside the normal one,
    the paired cost of hiding them, and per class the recall with and without them, the share kept, the share
    of other classes' films called that class, the share of the margin kept (KEEP), and whether the class is
    read from outside the lungs."""
    known = labels != UNLABELED
    y, probs, hidden = labels[known], probs[known], hidden[known]
    with_lungs, without = probs.argmax(1), hidden.argmax(1)
    cost = paired_difference(y, probs[None], hidden[None], e.bootstrap_resamples, e.seed, ("macro_f1",))
    per_class = {c: _class_entry(k, y, with_lungs, without) for k, c in enumerate(classes)}
    return {
        "split": split,
        "box": h.model_dump(),
        "keep_at_least": KEEP,
        "macro_f1": macro_f1(y, without),
        "macro_f1_ci95": bootstrap_ci(y, hidden, METRICS["macro_f1"].batch, e.bootstrap_resamples, e.seed),
        "macro_f1_with_lungs": macro_f1(y, with_lungs),
        "cost": {"difference": cost["macro_f1"]["difference"], "ci95": cost["macro_f1"]["ci95"]},
        "per_class": per_class,
        "read_outside_lungs": [c for c, v in per_class.items() if v.get("read_outside_lungs")],
    }


def _class_entry(k: int, y: np.ndarray, with_lungs: np.ndarray, hidden: np.ndarray) -> dict:
    """Class `k`'s entry, from the labels and the predicted classes with and without the lungs."""
    mine, others = y == k, y != k
    if not mine.any():
        return {"absent": True, "support": 0}
    recall, recall_hidden = float((with_lungs[mine] == k).mean()), float((hidden[mine] == k).mean())
    called = float((with_lungs[others] == k).mean()) if others.any() else 0.0
    called_hidden = float((hidden[others] == k).mean()) if others.any() else 0.0
    kept = _share(recall_hidden, recall)
    margin_kept = _share(recall_hidden - called_hidden, recall - called)
    return {
        "recall": recall_hidden,
        "recall_with_lungs": recall,
        "kept": kept,
        "other_films_called_it": called_hidden,
        "other_films_called_it_with_lungs": called,
        "margin_kept": margin_kept,
        "read_outside_lungs": kept is not None and margin_kept is not None and min(kept, margin_kept) >= KEEP,
        "support": int(mine.sum()),
    }


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


# params: the runs' prediction folders, the split, their normal (labels, probabilities [runs, N, C]), how to score.
def of_runs(folders, split: str, normal: tuple, classes, e: Evaluate, h: HideLungs) -> dict:
    """The `lungs_hidden` block of the mean of several runs (a seed ensemble, the ensemble), from each run's
    predictions of `split` with the lungs hidden, as evaluate wrote them."""
    _, labels, hidden = read_runs(folders, predictions_split(split), classes)
    return block(split, labels, normal[1].mean(0), hidden.mean(0), classes, e, h)
