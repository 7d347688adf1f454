"""Grad-CAM heatmaps through the maintained `grad-cam` package (pytorch_grad_cam).

Chosen over a hand-written hook implementation: it handles gradient hooks, ReLU and per-image
normalisation, and is what most CXR papers cite. The layer it targets is part of each backbone's
record (stages/lib/core/backbones.py): the last convolutional stage, before global pooling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from stages.lib.core.backbones import spec
from stages.lib.data.dataset import CachedSplit
from stages.lib.data.transforms import to_model_input
from stages.lib.model.networks import gradcam_layer

MIN_CAM = 7  # cells a side of the last feature map below which no heatmap is drawn (224 px at stride 32)


def heatmaps(model: torch.nn.Module, backbone: str, images: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM of class `targets[i]` for uint8 images [B,1,S,S]: float [B,S,S] in [0, 1]."""
    model.eval()
    x = to_model_input(images, next(model.parameters()).device)
    with GradCAM(model=model, target_layers=[gradcam_layer(model, backbone)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]).astype(np.float32)


def feature_map_size(model: torch.nn.Module, backbone: str, image_size: int) -> tuple[int, int]:
    """(height, width) of the Grad-CAM layer's output for a square input of `image_size` px.

    A stride-32 network gives 2x2 at 64 px and 7x7 at 224 px: below 7x7 a "heatmap" is a few blocks
    scaled up, which cannot point at anatomy, so the figure shows none.
    """
    sizes = []
    hook = gradcam_layer(model, backbone).register_forward_hook(lambda m, i, out: sizes.append(tuple(out.shape[-2:])))
    try:
        model.eval()
        with torch.no_grad():
            model(
                to_model_input(
                    torch.zeros(1, 1, image_size, image_size, dtype=torch.uint8), next(model.parameters()).device
                )
            )
    finally:
        hook.remove()
    return sizes[0]


def too_coarse(backbone: str, image_size: int, cells: tuple[int, int]) -> str | None:
    """Why no heatmap is drawn, as a sentence for the figure; None when the feature map is fine enough."""
    if min(cells) >= MIN_CAM:
        return None
    return (
        f"No heatmap: at {image_size} px the last feature map ({spec(backbone).gradcam_layer}) is "
        f"{cells[0]}x{cells[1]}, under {MIN_CAM}x{MIN_CAM};\na few blocks scaled up cannot point at anatomy. "
        f"preprocess.img_size >= {math.ceil(image_size * MIN_CAM / min(cells))} gives heatmaps."
    )


def pick_examples(labels: np.ndarray, predicted: np.ndarray, per_class: int, num_classes: int) -> list[list[int]]:
    """Per class, up to `per_class` images: a correct and a misclassified one in turn (the first of each
    in file order, so nothing is hand-picked), the other kind filling in when one runs out."""
    rows = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        kinds = [[int(i) for i in members if predicted[i] == c], [int(i) for i in members if predicted[i] != c]]
        picked = []
        while len(picked) < per_class and any(kinds):
            for kind in kinds:
                if kind and len(picked) < per_class:
                    picked.append(kind.pop(0))
        rows.append(picked)
    return rows


def examples(model: torch.nn.Module, backbone: str, data: CachedSplit, probs: np.ndarray, per_class: int):
    """(rows, note): Grad-CAM of the predicted class for correct and misclassified images of each class
    of `data` (`per_class` a class, pick_examples), one row per class as report.plots.gradcam_grid
    draws them; no heatmap, and `note` says why, when the target layer's map is too coarse."""
    predicted = probs.argmax(1)
    rows = pick_examples(data.labels, predicted, per_class, len(data.classes))
    picks = [i for row in rows for i in row]
    images = torch.stack([data[i][0] for i in picks])
    note = too_coarse(backbone, images.shape[-1], feature_map_size(model, backbone, images.shape[-1]))
    heat = [None] * len(picks) if note else heatmaps(model, backbone, images, [int(predicted[i]) for i in picks])
    example = {
        i: {
            "image": images[k, 0].numpy(),
            "heat": heat[k],
            "caption": _caption(data.classes, data.labels[i], predicted[i], probs[i]),
        }
        for k, i in enumerate(picks)
    }
    return [[example[i] for i in row] for row in rows], note


def _caption(classes, true: int, predicted: int, probs) -> str:
    verdict = "correct" if true == predicted else "MISCLASSIFIED"
    return f"{verdict}: true {classes[true]}\npredicted {classes[predicted]} (p={probs[predicted]:.2f})"
