"""The four torchvision backbones with the study's head: Dropout(p) -> Linear(in_features, 4)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models

from stages.lib.errors import UserError

# name -> (constructor, ImageNet weights enum member)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], models.WeightsEnum]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "densenet121": (models.densenet121, models.DenseNet121_Weights.IMAGENET1K_V1),
    "efficientnet_b0": (models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1),
    "convnext_tiny": (models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1),
}


def check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; train.backbones allows {', '.join(BACKBONES)}")


def build_model(backbone: str, num_classes: int, dropout: float, pretrained: bool) -> nn.Module:
    """A torchvision backbone whose classifier ends in the study's Dropout -> Linear head."""
    check_backbone(backbone)
    constructor, weights = BACKBONES[backbone]
    model = constructor(weights=_available(weights, backbone) if pretrained else None)
    _replace_head(model, backbone, num_classes, dropout)
    return model


def ensure_pretrained(backbone: str) -> None:
    """Fetch the ImageNet weights now (or fail with how to provide them), e.g. once before N ranks start."""
    check_backbone(backbone)
    _available(BACKBONES[backbone][1], backbone)


def head(model: nn.Module, backbone: str) -> nn.Sequential:
    """The replaced classifier: its last two modules are Dropout and Linear."""
    return model.fc if backbone == "resnet18" else model.classifier


def _replace_head(model: nn.Module, backbone: str, num_classes: int, dropout: float) -> None:
    def new_head(in_features: int) -> list[nn.Module]:
        return [nn.Dropout(dropout), nn.Linear(in_features, num_classes)]

    if backbone == "resnet18":
        model.fc = nn.Sequential(*new_head(model.fc.in_features))
    elif backbone == "densenet121":
        model.classifier = nn.Sequential(*new_head(model.classifier.in_features))
    elif backbone == "efficientnet_b0":  # its own Dropout(0.2) is replaced by ours
        model.classifier = nn.Sequential(*new_head(model.classifier[-1].in_features))
    else:  # convnext_tiny keeps LayerNorm2d + Flatten before the new head
        norm, flatten, linear = model.classifier
        model.classifier = nn.Sequential(norm, flatten, *new_head(linear.in_features))


def _available(weights: models.WeightsEnum, backbone: str) -> models.WeightsEnum:
    """Return `weights` if torch.hub can supply them; otherwise fail with how to provide them.

    Never falls back to random initialisation: a silently untrained backbone would make every
    later number meaningless.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    cached = checkpoints / os.path.basename(weights.url)
    if cached.is_file():
        return weights
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
    except Exception as err:  # URLError, timeout, SSL, hash mismatch: all mean "not available"
        raise UserError(
            f"ImageNet weights for {backbone} are not cached at {cached} and could not be downloaded "
            f"({err.__class__.__name__}); download {weights.url} into {checkpoints} (or point TORCH_HOME "
            f"at a folder whose hub/checkpoints/ holds it), or set train.pretrained=false to train from scratch"
        ) from err
    return weights
