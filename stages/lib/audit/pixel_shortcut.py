"""The pixel shortcut: how well does the film outside the lungs, with the lungs hidden, predict the class?

When each class comes from its own hospital (the study's COVID-19 films are adults' from one hospital,
the others children's from another), age, body size, devices, markers and the scanner's look give the
class away without the lungs (DeGrave, Janizek and Lee 2021; Maguolo and Nanni 2021 trained networks on
films with the lungs blacked out and still scored well). The metadata audit (shortcut.py) cannot see
that. This classifier sees only the pixels outside params' `hide_lungs` box: the film averaged to a
coarse grid (body outline and position, devices, markers, collimation), the grey-level histogram of
the rim (exposure, the scanner's processing) and its mean neighbour differences (sharpness, noise).
Every candidate of params' `pixel_shortcut` is fitted on train; val macro-F1 picks one.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from stages.lib.audit import shortcut
from stages.lib.audit.shortcut import macro_f1
from stages.lib.data.transforms import hide_lungs, outside_mask
from stages.lib.params.schema import HideLungs, PixelShortcut

CHUNK = 1024  # films turned into features at a time: memory flat at any split size
# Fitted and applied on one thread: the models are small, and on a busy 2-core machine OpenMP's waiting
# threads made the boosted trees 30x slower (63 s against 2 s on the 160 cxr4 train films, measured).
THREADS = 1
SEES = (
    "the film outside the central box only (the box set to one grey level): the film averaged to a "
    "{grid}x{grid} grid, a {bins}-bin grey-level histogram and the mean neighbour differences of the rim"
)


def features(images: np.ndarray, h: HideLungs, p: PixelShortcut) -> np.ndarray:
    """float32 [N, grid² + bins + 4] from uint8 films [N, S, S]: nothing inside the box reaches it."""
    visible = outside_mask(images.shape, h)
    rows = [_chunk_features(images[i : i + CHUNK], visible, h, p) for i in range(0, len(images), CHUNK)]
    return np.concatenate(rows) if rows else np.zeros((0, p.grid**2 + p.bins + 4), np.float32)


def _chunk_features(images: np.ndarray, visible: np.ndarray, h: HideLungs, p: PixelShortcut) -> np.ndarray:
    hidden = hide_lungs(images, h)
    coarse = np.stack([cv2.resize(f, (p.grid, p.grid), interpolation=cv2.INTER_AREA) for f in hidden])
    rim = hidden[:, visible].astype(np.int64)  # [n, pixels outside the box]
    codes = (rim * p.bins) >> 8  # grey level -> bin, 0 .. bins - 1
    offsets = np.arange(len(rim))[:, None] * p.bins
    histogram = np.bincount((codes + offsets).ravel(), minlength=len(rim) * p.bins).reshape(len(rim), p.bins)
    f = hidden.astype(np.float32)
    # Differences next to or inside the box involve only rim pixels and the constant fill: still no lung.
    texture = [
        np.abs(np.diff(f, axis=2)).mean((1, 2)),
        np.abs(np.diff(f, axis=1)).mean((1, 2)),
        np.abs(np.diff(f[:, :, ::2], axis=2)).mean((1, 2)),
        np.abs(np.diff(f[:, ::2, :], axis=1)).mean((1, 2)),
    ]
    return np.concatenate(
        [coarse.reshape(len(f), -1) / 255, histogram / max(1, rim.shape[1]), np.stack(texture, 1) / 255], 1
    ).astype(np.float32)


def candidates(p: PixelShortcut) -> dict:
    """{name: unfitted classifier}: an L2 logistic regression per C (standardised features), and boosted trees.
    Classes are weighted by their inverse frequency, as the networks' loss is."""
    out = {
        f"logistic regression, C={c:g}": make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        )
        for c in p.C
    }
    if p.boosting:
        out["gradient-boosted trees"] = HistGradientBoostingClassifier(class_weight="balanced", random_state=p.seed)
    return out


def fit_and_choose(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], p: PixelShortcut):
    """(name, fitted classifier, {name: val macro-F1}): each candidate fitted on `train` = (features, labels),
    the one with the best val macro-F1 kept (the first listed on a tie, the simplest)."""
    scores, fitted = {}, {}
    with threadpool_limits(THREADS):
        for name, model in candidates(p).items():
            fitted[name] = model.fit(*train)
            scores[name] = round(macro_f1(val[1], fitted[name].predict(val[0])), 4)
    best = max(scores, key=scores.get)  # max keeps the first of equal scores
    return best, fitted[best], scores


def probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """shortcut.probabilities, on THREADS threads."""
    with threadpool_limits(THREADS):
        return shortcut.probabilities(model, x, n_classes)
