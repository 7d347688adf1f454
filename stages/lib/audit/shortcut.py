"""Shortcut audit: how well does file metadata alone (no pixels) predict the class?

Public CXR collections mix sources, so format, size and bit depth can carry the label. A random
forest fitted on those facts of the train split and scored on val/test is the floor a network
must clearly beat before its score says anything about the lungs.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score, recall_score

from stages.lib.core.names import SCORED_SPLITS

NUMERIC = ("width", "height", "channels", "bit_depth", "file_bytes")
# Each tree is grown to purity on a bootstrap sample of at most this many images: uncapped, the 200
# trees hold ~160 nodes per training image (file_bytes is near unique), ~1.5 GB at 100k; capped, the
# forest stays under ~300 MB at any N, and a train split this size or smaller is fitted as before.
MAX_SAMPLES_PER_TREE = 10_000


def fit_forest(x: np.ndarray, y: list[int], seed: int) -> RandomForestClassifier:
    cap = MAX_SAMPLES_PER_TREE if len(y) > MAX_SAMPLES_PER_TREE else None
    return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1, max_samples=cap).fit(x, y)


def probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """[N, n_classes] class probabilities, a column per class index (a fitted class set may be a subset)."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def macro_f1(y: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the classes present, as every model's early stopping and report count it."""
    return float(f1_score(y, predicted, labels=np.unique(y), average="macro", zero_division=0))


def features(facts: list[dict], formats: list[str]) -> np.ndarray:
    """One row per image: numeric facts plus a one-hot of the file format."""
    return np.array(
        [[f[k] for k in NUMERIC] + [float(f["format"] == x) for x in formats] for f in facts], dtype=np.float64
    )


def shortcut_audit(
    splits: dict[str, list[tuple[dict, int | None]]], seed: int, classes
) -> tuple[dict, dict[str, np.ndarray]]:
    """`splits`: split -> (facts, label) per image. Fits on train, scores each other labeled split:
    ({"val": {"macro_f1", "per_class_recall"}, "test": {...}, "features": [...]},
     {split: class probabilities [N, len(classes)] of every image of val and test, in order}).
    The probabilities let the report compare every model with this classifier image by image."""
    formats = sorted({f["format"] for rows in splits.values() for f, _ in rows})
    train = [(f, y) for f, y in splits["train"] if y is not None]
    model = fit_forest(features([f for f, _ in train], formats), [y for _, y in train], seed)
    out, probs = {}, {}
    for split in SCORED_SPLITS:
        rows = splits.get(split, [])
        if not rows:
            continue
        probs[split] = probabilities(model, features([f for f, _ in rows], formats), len(classes))
        known = np.array([y is not None for _, y in rows])
        if not known.any():
            continue  # a hidden-label test set cannot be scored
        y_true = np.array([y for _, y in rows if y is not None])
        y_pred = probs[split][known].argmax(1)  # = model.predict: classes_ are sorted indices
        present = sorted(set(y_true.tolist()))  # recall of the classes present, as macro_f1 counts them
        recall = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
        out[split] = {
            "macro_f1": round(macro_f1(y_true, y_pred), 4),
            "per_class_recall": {classes[c]: round(float(r), 4) for c, r in zip(present, recall)},
        }
    out["features"] = list(NUMERIC) + [f"format={x}" for x in formats]
    return out, probs
