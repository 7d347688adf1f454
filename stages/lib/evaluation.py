"""Scoring trained models: load a checkpoint, predict a split, read/write per-image predictions."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from stages.lib.data import UNLABELED, CachedSplit
from stages.lib.errors import UserError
from stages.lib.metrics import split_metrics
from stages.lib.models import build_model
from stages.lib.training import load_checkpoint, predict


SCORED_SPLITS = ("val", "test")  # train is never scored after training


def load_model(path: str | os.PathLike, backbone: str | None = None, preprocess: dict | None = None,
               classes=None):
    """Rebuild the network from a checkpoint, refusing one that does not fit what the caller expects."""
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    if classes is not None and list(meta["classes"]) != list(classes):
        raise UserError(f"{path} was trained for classes {meta['classes']}, the data has {list(classes)}; "
                        f"retrain it on this data (dvc repro)")
    if backbone is not None and meta["backbone"] != backbone:
        raise UserError(f"{path} holds a {meta['backbone']} model, not {backbone}; retrain it (dvc repro train@{backbone})")
    if preprocess is not None and meta["preprocess"] != preprocess:
        raise UserError(f"{path} was trained on images preprocessed with {meta['preprocess']}, the cache has "
                        f"{preprocess}; rerun the pipeline (dvc repro)")
    model = build_model(meta["backbone"], len(meta["classes"]), meta["dropout"], pretrained=False)
    model.load_state_dict(ckpt["state_dict"])
    return model, meta


def predict_split(model, cache_dir: str, split: str, batch_size: int, device: torch.device, hflip: bool = False):
    """(file names, labels, probabilities [N, C]) for one cached split."""
    data = CachedSplit(cache_dir, split)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    probs, labels, _ = predict(model, loader, device, hflip=hflip)
    return data.names, labels, probs


def score_split(labels: np.ndarray, probs: np.ndarray, classes, e: dict) -> dict | None:
    """Metrics of the labelled images of a split (`e`: params' evaluate); None if none is labelled.

    A hidden-label test set still gets predictions; it just cannot be scored.
    """
    known = labels != UNLABELED
    if not known.any():
        return None
    return split_metrics(labels[known], probs[known], classes, int(e["bootstrap_resamples"]), int(e["seed"]),
                         int(e["calibration_bins"]))


def average_probabilities(probs: list[np.ndarray]) -> np.ndarray:
    """The ensemble: the mean of the members' class probabilities (each row still sums to 1)."""
    return np.mean(np.stack(probs), axis=0)


# --- per-image predictions CSV: filename,true_label,predicted_label,prob_<class>... ---------------

def predictions_csv(names, labels: np.ndarray, probs: np.ndarray, classes) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
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
    labels = np.array([classes.index(r["true_label"]) if r["true_label"] else UNLABELED for r in rows],
                      dtype=np.int64)
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    return names, labels, probs
