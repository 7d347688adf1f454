"""The best model's file: weights and plain metadata, so it loads with torch.load(weights_only=True) and no
project class is pickled by its module path; and what that metadata must record to rebuild its model.

Every value the model needs comes from the checkpoint, checked against a typed schema (pydantic, strict):
a missing or mistyped one is refused naming its key, never filled from params.yaml's defaults (a 32 px
model run at 256 px would silently change its predictions). The checks are the params schema's own, with
every default removed; keys beyond these (seed, epoch, provenance...) are left to their readers. The state
that resumes a killed run is resume.py's.
"""

from __future__ import annotations

import copy
import os
from typing import Annotated

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError
from torch import nn

from stages.lib.core.backbones import BACKBONES, REGISTRY
from stages.lib.core.errors import UserError
from stages.lib.core.files import atomic_path
from stages.lib.params.schema import Preprocess, Train


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    """Weights plus plain metadata, loadable with torch.load(weights_only=True)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": copy.deepcopy(meta)}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise UserError(f"{path} not found; train it first (dvc repro train)") from err
    except Exception as err:
        raise UserError(
            f"{path} is not a checkpoint written by the train stage ({err.__class__.__name__}); "
            f"retrain it (dvc repro --force train)"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("meta"), dict):
        raise UserError(f"{path} lacks state_dict/meta; retrain it with this version of the train stage")
    check_meta(ckpt["meta"], path)  # what predict and evaluate rebuild the model from
    return ckpt


def _without_defaults(section: type[BaseModel]) -> type[BaseModel]:
    """`section` with the same types and bounds, every field required."""
    fields = {name: (Annotated[f.annotation, *f.metadata], ...) for name, f in section.model_fields.items()}
    return create_model(f"Stored{section.__name__}", __config__=section.model_config, **fields)


def _registered(name: str) -> str:
    """A backbone with a record in the registry as it is when the checkpoint is read."""
    if name not in BACKBONES:
        raise PydanticCustomError("backbone", f"has no record in {REGISTRY} (records: {', '.join(BACKBONES)})")
    return name


class CheckpointMeta(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    backbone: Annotated[str, AfterValidator(_registered)]
    classes: Annotated[list[str], Field(min_length=2)]
    preprocess: _without_defaults(Preprocess)
    dropout: Annotated[float, *Train.model_fields["dropout"].metadata]


def check_meta(meta: dict, path) -> None:
    """Refuse, in one line naming the first bad key, metadata that cannot rebuild the model exactly."""
    try:
        CheckpointMeta.model_validate(meta)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        got = "" if first["type"] == "missing" else f", got {first['input']!r}"
        raise UserError(
            f"{path}: its metadata key {key}: {first['msg'].lower()}{got} (an older or edited "
            f"checkpoint); retrain it (dvc repro --force train)"
        ) from None
