"""Split-conformal prediction sets (LAC, Sadinle et al. 2019) fitted on val probabilities, and their
coverage and size with bootstrap CIs.

The score of an image is 1 - p(true class). On n val images the threshold q is the
ceil((n + 1)(1 - alpha))-th smallest score; a film's set holds every class with 1 - p(class) <= q,
i.e. p(class) >= 1 - q. If val and test are exchangeable, P(true class in set) >= 1 - alpha.

Hand-written rather than MAPIE or crepes (evaluated): MAPIE's classifiers want a fitted scikit-learn
estimator to call, where we hold precomputed probabilities (a wrapper estimator only to hand them back
is the contortion); crepes takes scores directly but forms sets from (by default smoothed, randomised)
p-values and keeps the whole calibration-score array, where cxr4-predict needs one stored threshold.
The method itself is the few lines below, checked against a worked example in tests/test_posthoc.py.
"""

from __future__ import annotations

import math

import numpy as np

from stages.lib.results.metrics import bootstrap_ci

SCORE = "LAC: 1 - p(class), on temperature-scaled probabilities"


def fit_threshold(labels: np.ndarray, probs: np.ndarray, alpha: float) -> dict:
    """The LAC threshold q on val. When val is too small for alpha (ceil((n+1)(1-alpha)) > n), q = 1:
    every class in every set, which is the only set with the guarantee."""
    scores = 1.0 - probs[np.arange(len(labels)), labels]
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return {"threshold": 1.0, "note": f"val has {n} images, too few for alpha {alpha}: every set holds every class"}
    return {"threshold": float(np.sort(scores)[rank - 1]), "note": None}


def not_fitted(why: str) -> dict:
    """q = 1 with the reason: every class in every set (no information, and no false promise)."""
    return {"threshold": 1.0, "note": f"not applied: {why}; every set holds every class"}


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[N, C] booleans: class c is in image i's set when 1 - p[i, c] <= threshold."""
    return 1.0 - probs <= threshold + 1e-12  # the tolerance keeps the val image that set q in its own set


def set_names(sets: np.ndarray, classes) -> list[str]:
    """'bacteria|virus' per image, classes in output order; '' for an empty set."""
    return ["|".join(c for c, keep in zip(classes, row) if keep) for row in sets]


def _coverage_batch(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.take_along_axis(s, y[..., None], -1)[..., 0].mean(-1)


def _size_batch(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return s.sum(-1).mean(-1)


def coverage_scores(labels: np.ndarray, sets: np.ndarray, classes, resamples: int, seed: int) -> dict:
    """Marginal coverage and mean set size with 95% bootstrap CIs (resampling images), the count of
    empty sets, and coverage per true class (its CI resampling that class's images); a class with no
    image here is reported as absent, not as 0."""
    out = {
        "n": int(len(labels)),
        "coverage": float(_coverage_batch(labels[None], sets[None])[0]),
        "coverage_ci95": bootstrap_ci(labels, sets, _coverage_batch, resamples, seed),
        "mean_set_size": float(_size_batch(labels[None], sets[None])[0]),
        "mean_set_size_ci95": bootstrap_ci(labels, sets, _size_batch, resamples, seed, (0.0, sets.shape[1])),
        "empty_sets": int((~sets.any(1)).sum()),
        "per_class": {},
    }
    for c, name in enumerate(classes):
        mine = labels == c
        if not mine.any():
            out["per_class"][name] = {"n": 0, "absent": True}
            continue
        out["per_class"][name] = {
            "n": int(mine.sum()),
            "coverage": float(sets[mine, c].mean()),
            "coverage_ci95": bootstrap_ci(labels[mine], sets[mine], _coverage_batch, resamples, seed),
        }
    return out
