"""Grad-CAM heatmaps through the maintained `grad-cam` package (pytorch_grad_cam).

Chosen over a hand-written hook implementation: it handles gradient hooks, ReLU and per-image
normalisation, and is what most CXR papers cite. The layer it targets is part of each backbone's
record in models.py: the last convolutional stage, before global pooling.
"""
from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from stages.lib.models import gradcam_layer
from stages.lib.transforms import to_model_input


def heatmaps(model: torch.nn.Module, backbone: str, images: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM of class `targets[i]` for uint8 images [B,1,S,S]: float [B,S,S] in [0, 1]."""
    model.eval()
    x = to_model_input(images, next(model.parameters()).device)
    with GradCAM(model=model, target_layers=[gradcam_layer(model, backbone)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]).astype(np.float32)


def overlay(gray: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heatmap in colour over the preprocessed gray image: RGB uint8 [S,S,3]."""
    rgb = np.repeat(gray[..., None].astype(np.float32) / 255, 3, axis=-1)
    return show_cam_on_image(rgb, heat, use_rgb=True, image_weight=0.6)


def pick_examples(labels: np.ndarray, per_class: int, num_classes: int) -> list[int]:
    """The first `per_class` images of each class, in class order (deterministic)."""
    return [i for c in range(num_classes) for i in np.flatnonzero(labels == c)[:per_class]]
