"""Score a trained checkpoint on the cached val/test splits."""
from __future__ import annotations

import csv
import io
import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from stages.lib.data import CachedSplit
from stages.lib.errors import UserError
from stages.lib.metrics import classification_metrics
from stages.lib.models import build_model
from stages.lib.training import load_checkpoint, predict


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


def predict_split(model, cache_dir: str, split: str, batch_size: int, device: torch.device):
    data = CachedSplit(cache_dir, split)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    probs, labels, _ = predict(model, loader, device)
    return data.names, labels, probs


def evaluate_split(names, labels: np.ndarray, probs: np.ndarray, classes) -> tuple[dict, str]:
    """Metrics dict for the contract and the per-image predictions as CSV text."""
    preds = probs.argmax(1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", "true_label", "predicted_label", *[f"prob_{c}" for c in classes]])
    for name, y, p, pr in zip(names, labels, preds, probs):
        writer.writerow([name, classes[y], classes[p], *[f"{v:.6f}" for v in pr]])
    return classification_metrics(labels, preds, classes), buf.getvalue()

