"""The networks of the backbone registry's records (stages/lib/core/backbones.py), built with the study's head
Dropout(p) -> Linear(in, classes), and their pinned ImageNet weights.

Built on torchvision's own registry (`get_model`, `get_model_weights`) rather than timm: the study
fine-tuned torchvision's ImageNet weights, and timm's builds of the same names carry other weights
and apply the head's dropout inside `forward_head` instead of as a module, so neither the numbers
nor the checkpoints would stay the same. timm would add ViTs and hundreds of CNNs; a registry record
can name any torchvision classification model (`torchvision.models.list_models()`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from stages.lib.core.backbones import spec
from stages.lib.core.errors import UserError


def weights(name: str) -> models.WeightsEnum:
    return models.get_model_weights(name)[spec(name).weights]


def build_model(backbone: str, num_classes: int, dropout: float, pretrained: bool) -> nn.Module:
    """A torchvision backbone whose classifier ends in the study's Dropout -> Linear head."""
    record = spec(backbone)
    model = models.get_model(backbone, weights=_available(weights(backbone), backbone) if pretrained else None)
    old = getattr(model, record.classifier)
    layers = list(old) if isinstance(old, nn.Sequential) else [old]
    in_features = next(m.in_features for m in reversed(layers) if isinstance(m, nn.Linear))
    setattr(
        model,
        record.classifier,
        nn.Sequential(*layers[: record.keep], nn.Dropout(dropout), nn.Linear(in_features, num_classes)),
    )
    return model


def head(model: nn.Module, backbone: str) -> nn.Sequential:
    """The replaced classifier: its last two modules are Dropout and Linear."""
    return getattr(model, spec(backbone).classifier)


def gradcam_layer(model: nn.Module, backbone: str) -> nn.Module:
    return model.get_submodule(spec(backbone).gradcam_layer)


def ensure_pretrained(backbone: str) -> None:
    """Fetch the ImageNet weights now (or fail with how to provide them), e.g. once before N ranks start."""
    _available(weights(backbone), backbone)


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
