"""Out-of-distribution score: how far a film lies from the training films, seen by the network and as a picture.

Two distances, each the log of the smallest class-wise mean squared standardised distance to a
training class's mean with per-feature variances pooled within classes (a diagonal Mahalanobis
distance; Lee et al. 2018 use the full covariance, which a few hundred films cannot estimate in
512-1280 dimensions and which would not fit a small JSON):
- of the network's penultimate features (the input of the head's Linear layer);
- of the preprocessed film itself: its 8 x 8 thumbnail scaled to mean 0 and sd 1 (its layout: a
  lateral view, a page of text, a photo, noise), which a briefly trained network may not separate.
Means and variances come from the train split. Each distance is put in units of its val tail (median at 0, its
95th percentile on val at 1), the score is the larger, and the threshold is the val films' 95th percentile: by construction at most
5% of val films are flagged, and the share on test says how well that holds on unseen films of the
same kind. Energy on the logits (Liu et al. 2020) and the network's distance alone were measured
beside it on the demo and flagged far fewer non-X-ray films (docs/predict.md).

Stored beside the model as `<model>.ood.json` (written by evaluate); `cxr4-predict` finds it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json
from stages.lib.core.names import UNLABELED

KIND = "feature_and_film_distance"  # what `score` computes; a file of another kind is refused
KEEP = 0.95  # share of val films the threshold keeps in
VAR_FLOOR = 1e-6  # a feature constant on the train films must not divide by zero
THUMB = 8  # the film's layout: its 8 x 8 thumbnail


def ood_path(model_path: str | os.PathLike) -> Path:
    """models/<backbone>/seed<seed>.pt -> models/<backbone>/seed<seed>.ood.json"""
    return Path(model_path).with_suffix(".ood.json")


def film_features(films: np.ndarray) -> np.ndarray:
    """uint8 films [N, 1, S, S] (preprocessed) -> [N, 64]: the 8 x 8 thumbnail, each film scaled to mean 0
    and sd 1, so that its layout counts and not its exposure (an average-grey film is not "typical")."""
    thumbs = (
        np.array(
            [
                cv2.resize(np.ascontiguousarray(f[0]), (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
                for f in films
            ],
            dtype=np.float64,
        )
        / 255
    )
    return (thumbs - thumbs.mean(1, keepdims=True)) / (thumbs.std(1, keepdims=True) + 1e-3)


def _fit_distance(features: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Class means and pooled per-feature variances (a diagonal Mahalanobis distance)."""
    present = [c for c in range(n_classes) if (labels == c).any()]
    means = np.stack([features[labels == c].mean(0) for c in present])
    var = np.maximum((features - means[np.searchsorted(present, labels)]).var(0), VAR_FLOOR)
    return {"means": means.tolist(), "var": var.tolist()}


def _distance(stats: dict, features: np.ndarray) -> np.ndarray:
    """Log of the smallest class-wise mean squared standardised distance, one per film."""
    f = np.asarray(features, dtype=np.float64)
    means, var = np.asarray(stats["means"]), np.asarray(stats["var"])
    return np.log(((f[:, None, :] - means[None]) ** 2 / var).mean(-1).min(1) + 1e-12)


def _parts(stats: dict, net: np.ndarray, films: np.ndarray) -> np.ndarray:
    """[N, 2]: both distances, each centred on its val median and scaled so its val 95th percentile is 1."""
    d = np.stack([_distance(stats["net"], net), _distance(stats["film"], film_features(films))], 1)
    return (d - np.asarray(stats["centre"])) / np.asarray(stats["spread"])


def score(stats: dict, net: np.ndarray, films: np.ndarray) -> np.ndarray:
    """The OOD score of films (uint8 [N, 1, S, S]) with their penultimate features: the larger of the two
    distances, each in units of its spread on val."""
    return _parts(stats, net, films).max(1)


def fit(train: dict, val: dict, val_films: np.ndarray, n_classes: int) -> dict:
    """Distances fitted on train's labelled films; their scale and the threshold on val."""
    known = train["labels"] != UNLABELED
    stats = {
        "kind": KIND,
        **{
            k: _fit_distance(train[k][known].astype(np.float64), train["labels"][known], n_classes)
            for k in ("net", "film")
        },
        "centre": [0.0, 0.0],
        "spread": [1.0, 1.0],
    }
    d = _parts(stats, val["net"], val_films)
    # Each distance in units of its own val tail (its KEEP quantile sits at 1), so a part whose val films
    # spread widely (a weak network's features) cannot hide the other part's signal under its outliers.
    median, tail = np.median(d, axis=0), np.quantile(d, KEEP, axis=0, method="higher")
    stats["centre"], stats["spread"] = median.tolist(), np.maximum(tail - median, 1e-6).tolist()
    val_scores = score(stats, val["net"], val_films)
    return {**stats, "threshold": float(np.quantile(val_scores, KEEP, method="higher")), "keep": KEEP}


def flagged(stats: dict, scores: np.ndarray) -> np.ndarray:
    return scores > stats["threshold"]


def fit_and_flag(feats: dict, films: dict, n_classes: int) -> dict:
    """Fit on train (distances) and val (scale, threshold) of the features `measure` gives
    (stages/lib/model/features.py); record under `flagged` the share flagged on each set of films: the
    shares the summary reports."""
    stats = fit(feats["train"], feats["val"], films["val"], n_classes)
    stats["flagged"] = {s: float(flagged(stats, score(stats, feats[s]["net"], films[s])).mean()) for s in films}
    return stats


def load(path: str | os.PathLike) -> dict:
    """A fitted score from its JSON, refusing one this version cannot compute."""
    stats = read_json(path)
    if not isinstance(stats, dict) or stats.get("kind") != KIND or "threshold" not in stats:
        raise UserError(
            f"{path} is not an OOD score this version computes (kind {KIND}); rerun evaluate "
            "(dvc repro --force evaluate)"
        )
    return stats
