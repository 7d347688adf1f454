"""What every params section is built from: the strict base model, the notes on a field's source and allowed values, the one-rule refusal."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", validate_default=True, allow_inf_nan=False)


def allows(text: str, **source) -> dict:
    """What a field checked by its own validator accepts (for messages and docs/params.md)."""
    return {"allowed": text, **source}


def source_of(source: str, code=None) -> dict:
    """Where a default comes from (docs/params.md): the study's `report`, its published `code` where the
    report is silent, or `ours`. `code` notes the code's value where it differs from the report's."""
    return {"source": source + (f" (its code: {code})" if code is not None else "")}


def refuse(rule: str, show_value: bool = True) -> PydanticCustomError:
    """A validation error whose message is `rule` ("must be ..."), shown after the key's name."""
    return PydanticCustomError("rule" if show_value else "sentence", rule)
