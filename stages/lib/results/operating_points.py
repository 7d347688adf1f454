"""Operating points: per class, the probability threshold that reaches a target sensitivity on val,
and that threshold's sensitivity and specificity (with bootstrap CIs) on test or an external set.

A film is flagged for class c when p(c) >= the threshold (one-vs-rest, independent of the argmax).
"""

from __future__ import annotations

import math

import numpy as np

from stages.lib.results.metrics import bootstrap_ci


def fit_threshold(labels: np.ndarray, probs: np.ndarray, c: int, target: float) -> dict:
    """The highest threshold whose val sensitivity for class `c` is at least `target`: the
    ceil(target * n_positive)-th highest positive score. None (with a note) without val positives."""
    positives = np.sort(probs[labels == c, c])[::-1]
    if not len(positives):
        return {"threshold": None, "note": "no image of this class in val: no threshold"}
    return {"threshold": float(positives[math.ceil(target * len(positives)) - 1]), "note": None}


def _sensitivity_batch(y: np.ndarray, flagged: np.ndarray, c: int) -> np.ndarray:
    positive = y == c
    with np.errstate(divide="ignore", invalid="ignore"):
        return (flagged & positive).sum(-1) / positive.sum(-1)


def _specificity_batch(y: np.ndarray, flagged: np.ndarray, c: int) -> np.ndarray:
    negative = y != c
    with np.errstate(divide="ignore", invalid="ignore"):
        return (~flagged & negative).sum(-1) / negative.sum(-1)


def operating_scores(
    labels: np.ndarray, probs: np.ndarray, c: int, threshold: float, resamples: int, seed: int
) -> dict:
    """Sensitivity and specificity of flagging class `c` at `threshold`, with 95% bootstrap CIs over
    images; a side with no image (no positives, or no negatives) is None, with the count 0."""
    flagged = probs[:, c] >= threshold
    out = {"n_positive": int((labels == c).sum()), "n_negative": int((labels != c).sum())}
    for name, statistic, count in (
        ("sensitivity", _sensitivity_batch, "n_positive"),
        ("specificity", _specificity_batch, "n_negative"),
    ):
        if not out[count]:
            out[name], out[f"{name}_ci95"] = None, [None, None]
            continue
        batch = lambda y, f, s=statistic: s(y, f, c)  # noqa: E731  (bootstrap_ci's (labels, values) form)
        out[name] = float(batch(labels[None], flagged[None])[0])
        out[f"{name}_ci95"] = bootstrap_ci(labels, flagged, batch, resamples, seed)
    return out
