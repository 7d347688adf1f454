"""Whether mixed-precision inference gives fp32's predictions: the rule evaluate's precision is held to.

A film agrees when both precisions pick the same class and none of its class probabilities moves by
more than `MAX_PROB_DIFF`; the precision passes when at least `MIN_AGREEING` of the films agree.
"""

from __future__ import annotations

import numpy as np

MIN_AGREEING = 0.995
MAX_PROB_DIFF = 0.01


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """`reference` (fp32) and `other` probabilities [N, C] of the same films, in the same order."""
    if reference.shape != other.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(f"need two [N, C] probability arrays of one shape, got {reference.shape} and {other.shape}")
    same_class = reference.argmax(1) == other.argmax(1)
    film_diff = np.abs(reference - other).max(1)
    agreeing = same_class & (film_diff <= MAX_PROB_DIFF)
    return {
        "films": len(reference),
        "same_class": round(float(same_class.mean()), 4),
        "agreeing": round(float(agreeing.mean()), 4),
        "max_prob_diff": round(float(film_diff.max()), 5),
        "ok": bool(agreeing.mean() >= MIN_AGREEING),
    }
