"""The backbone registry: one record per network, pure data (no torch), and the one file to touch to add one.

Read by params (the names `backbones` may list, and its default: the study's four), by the model room (each
network built with the study's head: stages/lib/model/networks.py) and by the report (the study's numbers).
A record's key is a torchvision classification model's name (`torchvision.models.list_models()`).
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.lib.core.errors import UserError

REGISTRY = "stages/lib/core/backbones.py"  # this file, as messages name it


@dataclass(frozen=True)
class Backbone:
    weights: str  # the ImageNet weights, pinned (a torchvision release may change DEFAULT)
    classifier: str  # the attribute holding the classifier that the new head replaces
    keep: int  # leading modules of that classifier kept before the head (ConvNeXt's norm, flatten)
    gradcam_layer: str  # Grad-CAM target: the last convolutional stage, before global pooling
    study_val: tuple[float, float] | None = None  # the reference study's val (accuracy, macro-F1), if it has one


BACKBONES: dict[str, Backbone] = {  # key: torchvision's model name
    "resnet18": Backbone("IMAGENET1K_V1", "fc", 0, "layer4.1", (0.818, 0.846)),
    "densenet121": Backbone("IMAGENET1K_V1", "classifier", 0, "features.norm5", (0.838, 0.836)),
    # EfficientNet's own Dropout(0.2) is replaced by ours
    "efficientnet_b0": Backbone("IMAGENET1K_V1", "classifier", 0, "features.8", (0.771, 0.798)),
    "convnext_tiny": Backbone("IMAGENET1K_V1", "classifier", 2, "features.7", (0.839, 0.837)),
}


def spec(name: str) -> Backbone:
    """The record of backbone `name` (params are checked against the registry when they load)."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; {REGISTRY} has records for {', '.join(BACKBONES)}")
    return BACKBONES[name]


def study_backbones() -> list[str]:
    """The backbones the study compared (the records with its numbers), in the registry's order: params' default."""
    return [name for name, record in BACKBONES.items() if record.study_val is not None]
