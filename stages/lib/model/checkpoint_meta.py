"""What a checkpoint must record to rebuild its model, as a typed schema (pydantic, strict).

Every value the model needs comes from the checkpoint: a missing or mistyped one is refused
naming its key, never filled from params.yaml's defaults (a 32 px model run at 256 px would
silently change its predictions). The checks are the params schema's own (config.py), with
every default removed; keys beyond these (seed, epoch, provenance...) are left to their readers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from stages.lib.core.errors import UserError
from stages.lib.model.registry import BACKBONES
from stages.lib.params.schema import Preprocess, Train


def _without_defaults(section: type[BaseModel]) -> type[BaseModel]:
    """`section` with the same types and bounds, every field required."""
    fields = {name: (Annotated[f.annotation, *f.metadata], ...) for name, f in section.model_fields.items()}
    return create_model(f"Stored{section.__name__}", __config__=section.model_config, **fields)


class CheckpointMeta(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    backbone: Literal[tuple(BACKBONES)]
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
