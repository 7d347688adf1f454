"""Classification metrics in the shape of the metrics/<backbone>.json contract (via sklearn), and the
registry of the numbers a split reports about all its films (`METRICS`): each declared once, with its
label, direction, how it is computed, and where it is shown. To add a metric, add its `Metric` there.

`split_metrics` is the one entry point: the evaluate stage, the ensemble and the report all call
it on (labels, probabilities), so their numbers cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in y_true: the number early stopping and reports use."""
    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes) -> dict:
    """accuracy, balanced accuracy, macro and weighted P/R/F1, per-class P/R/F1/support."""
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # Macro averages over classes that occur in the split, so a class absent from a small split
    # does not pull the average down with a meaningless 0.
    present = [i for i in labels if s[i] > 0] or labels
    weights = s / s.sum() if s.sum() else np.zeros(len(labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f[present])),
        "macro_precision": float(np.mean(p[present])),
        "macro_recall": float(np.mean(r[present])),
        # fsum, not `weights @ f`: BLAS may sum in another order from run to run, changing the last digit
        "weighted_f1": math.fsum(weights * f),
        "weighted_precision": math.fsum(weights * p),
        "weighted_recall": math.fsum(weights * r),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(classes)
        },
    }


def one_vs_rest_auroc(y_true: np.ndarray, probs: np.ndarray, c: int) -> float | None:
    """AUROC of class c against the rest; None when the split lacks positives or negatives."""
    positive = y_true == c
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, probs[:, c]))


def macro_auroc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the classes where it is defined (nan if none is)."""
    values = [one_vs_rest_auroc(y_true, probs, c) for c in range(probs.shape[1])]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE of the top-class confidence over equal-width bins, and the reliability-diagram rows."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        conf = float(confidence[members].mean()) if n else None
        acc = float(correct[members].mean()) if n else None
        if n:
            ece += n / len(y_true) * abs(acc - conf)
        rows.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "count": n,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return float(ece), rows


# Bootstrap statistics, vectorised over resamples: y [B, n] labels, p [B, n, C] probabilities.
# They equal the sklearn-based point metrics above on each resample (tested), at 1000x the speed
# of calling sklearn in a loop.


def _accuracy_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (p.argmax(-1) == y).mean(-1)


def _macro_f1_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    b, c = y.shape[0], p.shape[-1]
    codes = (np.arange(b)[:, None] * c + y) * c + p.argmax(-1)
    cm = np.bincount(codes.ravel(), minlength=b * c * c).reshape(b, c, c)
    tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(2), cm.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * tp / (support + predicted))  # = 2PR/(P+R), 0 where undefined
    present = support > 0
    return (f1 * present).sum(1) / present.sum(1)


def _macro_auroc_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    aucs = _class_auroc_batch(y, p)
    defined = np.isfinite(aucs).sum(1)
    return np.where(defined > 0, np.nansum(aucs, 1) / np.maximum(defined, 1), np.nan)


def _class_auroc_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each class on each resample: [B, C], nan where a class is undefined."""
    n = y.shape[1]
    aucs = []
    for c in range(p.shape[-1]):
        ranks = rankdata(p[..., c], axis=-1)  # Mann-Whitney U via average ranks, ties counted half
        pos = y == c
        n_pos = pos.sum(1)
        n_neg = n - n_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        aucs.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
    return np.stack(aucs, 1)


@dataclass(frozen=True)
class Metric:
    """One number a split reports about all its films, declared once: the metrics files (and a CI where it
    has `batch`), the headline files, the seeds block, the paired comparisons, the subgroups, the summary,
    the cards and the figures all read this record."""

    key: str  # its key in the metrics files; its 95% CI's is `<key>_ci95`
    label: str  # as a sentence names it ("macro-F1"); a table's header capitalises its first letter
    # (labels [n], probabilities [n, C]) -> its value on the split, None where undefined; None: `batch` on all films
    point: Callable[[np.ndarray, np.ndarray], float | None] | None = None
    # the same on bootstrap resamples (labels [B, n], probabilities [B, n, C]) -> [B], for its 95% CI and
    # the paired differences; None: no CI
    batch: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    higher_is_better: bool = True  # which side of a paired difference is the better one
    headline: tuple[str, ...] = ()  # the splits whose headline file (the DVC metric) holds it
    compared: bool = False  # stated as paired differences between the models (needs `batch`)
    tabled: bool = False  # a column of the summary's split tables; with a CI, of the cards' tables and figure too
    macro: bool = False  # averaged over the classes present (what a class absent from the split changes)
    digits: int = 3  # decimals shown

    @property
    def title(self) -> str:
        """The label as a table's header: "Macro-F1"."""
        return self.label[:1].upper() + self.label[1:]

    def value(self, labels: np.ndarray, probs: np.ndarray) -> float | None:
        if self.point is not None:
            return self.point(labels, probs)
        value = float(self.batch(labels[None], probs[None])[0])
        return value if np.isfinite(value) else None


def _of_predicted(score):
    """(labels, probabilities) -> sklearn's `score` of the predicted classes (the argmax)."""
    return lambda y, p: float(score(y, p.argmax(1)))


def _over_present(score):
    """(labels, probabilities) -> sklearn's macro average of `score` over the classes present in the labels (an
    absent class would add a meaningless 0): classification_metrics' number (tested)."""
    return lambda y, p: float(score(y, p.argmax(1), labels=np.unique(y), average="macro", zero_division=0))


def _macro_auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    auroc = macro_auroc(y, p)
    return auroc if np.isfinite(auroc) else None


# The registry, in the order the files and tables list them: add a metric here and nowhere else.
METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("accuracy", "accuracy", _of_predicted(accuracy_score), _accuracy_batch, headline=("test",), tabled=True),
        Metric(
            "macro_f1",
            "macro-F1",
            _over_present(f1_score),
            _macro_f1_batch,
            headline=("test", "val"),
            compared=True,
            tabled=True,
            macro=True,
        ),
        Metric("macro_precision", "macro precision", _over_present(precision_score), tabled=True, macro=True),
        Metric("macro_recall", "macro recall", _over_present(recall_score), tabled=True, macro=True),
        Metric("balanced_accuracy", "balanced accuracy", _of_predicted(balanced_accuracy_score), macro=True),
        Metric(
            "macro_auroc",
            "macro AUROC",
            _macro_auroc,
            _macro_auroc_batch,
            headline=("test",),
            compared=True,
            tabled=True,
            macro=True,
        ),
    )
}


# What each reader shows, read from METRICS when it is shown.


def ci_metrics() -> list[Metric]:
    """The metrics with a bootstrap 95% CI."""
    return [m for m in METRICS.values() if m.batch is not None]


def headline_keys() -> dict[str, tuple[str, ...]]:
    """{split: the metrics its headline file holds}, the splits in the order the registry first names them."""
    splits = dict.fromkeys(s for m in METRICS.values() for s in m.headline)
    return {s: tuple(m.key for m in METRICS.values() if s in m.headline) for s in splits}


def compared_keys() -> tuple[str, ...]:
    """The metrics whose paired differences between models are stated."""
    return tuple(m.key for m in METRICS.values() if m.compared)


def table_columns() -> list[Metric]:
    """The summary's split table's metric columns: those with a CI, then those without."""
    shown = [m for m in METRICS.values() if m.tabled]
    return [m for m in shown if m.batch is not None] + [m for m in shown if m.batch is None]


def ci_columns() -> list[Metric]:
    """The columns of the cards' tables and the panels of the models' comparison figure: the tabled metrics
    with a CI."""
    return [m for m in table_columns() if m.batch is not None]


def macro_labels() -> list[str]:
    """The averages a class absent from the split changes: those over the classes present."""
    return [m.label for m in METRICS.values() if m.macro]


def interval(point: float | None, draws: np.ndarray, bounds: tuple[float, float] = (0.0, 1.0)) -> list:
    """The 95% bootstrap interval of every CI the project reports, which always holds its point: the
    2.5th-97.5th percentile interval of `draws`, moved by the bootstrap's median bias so that the draws'
    median sits on `point`, and clipped to the statistic's range `bounds`. For a statistic the bootstrap
    centres on its point (accuracy, coverage) that is the percentile interval; for a biased one it undoes
    the bias the resampling adds: ECE on 90 films, whose resamples run 0.03 above it (binning noise),
    had a percentile interval wholly above its point. [None, None] where no draw is defined; no point
    (undefined on the whole sample): the percentile interval."""
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return [None, None]
    low, median, high = np.percentile(draws, [2.5, 50, 97.5])
    if point is None or not np.isfinite(point):
        return [float(low), float(high)]
    # point minus/plus non-negative widths: the ends can never pass the point through rounding
    return [float(max(point - (median - low), bounds[0])), float(min(point + (high - median), bounds[1]))]


def bootstrap_ci(
    y_true: np.ndarray, probs: np.ndarray, statistic, resamples: int, seed: int, bounds=(0.0, 1.0)
) -> list:
    """95% `interval` of a batched statistic over image resamples, around its value on all images."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), (resamples, len(y_true)))
    point = float(statistic(y_true[None], probs[None])[0])
    return interval(point, statistic(y_true[idx], probs[idx]), bounds)


def class_auroc_ci95(y_true: np.ndarray, probs: np.ndarray, resamples: int, seed: int) -> list[list]:
    """95% `interval` of each class's one-vs-rest AUROC, over the same image resamples as
    `bootstrap_ci` with the same seed; [None, None] for a class undefined in every resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), (resamples, len(y_true)))
    points = _class_auroc_batch(y_true[None], probs[None])[0]
    return [interval(p, column) for p, column in zip(points, _class_auroc_batch(y_true[idx], probs[idx]).T)]


# params: the films scored (labels, probabilities, classes), the bootstrap (resamples, seed), the ECE's bins,
# and the split's name that an absent class's note gives.
def split_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes,
    resamples: int = 1000,
    seed: int = 0,
    bins: int = 15,
    where: str = "this split",
) -> dict:
    """Everything reported for one split (`where`: its name in notes, e.g. "val"), from true labels and
    predicted probabilities. A class with no film here is absent (`absent_entry`), never a score of 0."""
    y_true = np.asarray(y_true)
    m = classification_metrics(y_true, probs.argmax(1), classes)
    for c, name in enumerate(classes):
        if not (y_true == c).any():
            m["per_class"][name] = absent_entry(probs, c, where)
            continue
        per = m["per_class"][name]
        per["auroc"] = one_vs_rest_auroc(y_true, probs, c)
        per["average_precision"] = float(average_precision_score(y_true == c, probs[:, c]))
        if per["auroc"] is None:
            per["auroc_note"] = f"undefined: every image in {where} is {name}"
    # every declared metric (those classification_metrics gave keep their place, each new one comes after)
    m.update({metric.key: metric.value(y_true, probs) for metric in METRICS.values()})
    for metric in ci_metrics():
        m[f"{metric.key}_ci95"] = bootstrap_ci(y_true, probs, metric.batch, resamples, seed)
    m["ece"], m["reliability"] = expected_calibration_error(y_true, probs, bins)
    return m


def absent_entry(probs: np.ndarray, c: int, where: str) -> dict:
    """A class with no film in a split: no precision, recall, F1, AUROC or average precision exists for
    it (null, not 0, which would be a score), the count of films the model called it, and why."""
    return {
        **dict.fromkeys(("precision", "recall", "f1"), None),
        "support": 0,
        **dict.fromkeys(("auroc", "average_precision"), None),
        "absent": True,
        "predicted_as": int((probs.argmax(1) == c).sum()),
        "note": f"not in {where}",
    }


def absent_from(m: dict) -> list[str]:
    """The classes a split_metrics dict marks absent, in output order."""
    return [c for c, pc in m["per_class"].items() if pc.get("absent")]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def headline(report: dict) -> dict:
    """The headline of a detail metrics report (`metrics/<model>.json`), the few numbers a reader compares
    across models and experiments (the DVC metrics files): each scored split's headline metrics
    (`headline_keys`), the seeds' sd of test macro-F1 when there are several, and the best epoch for a
    trained model. A split without labels is left out."""
    keys = headline_keys()
    out = {split: {k: report[split][k] for k in ks} for split, ks in keys.items() if report.get(split)}
    sd = (report.get("seeds") or {}).get("sd")
    if sd and "test" in out:  # several seeds: how far one run's test macro-F1 strays
        out["test"]["macro_f1_sd"] = sd["test"]["macro_f1"]
    if "best_epoch" in report:
        out["best_epoch"] = report["best_epoch"]
    return out
