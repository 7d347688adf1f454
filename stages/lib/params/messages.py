"""What a wrong params.yaml is told: keys removed, unknown or missing, and values outside what a field
allows, each as one line naming the file, the dotted key and the fix (the schema is in schema.py)."""

from __future__ import annotations

import difflib
import re
from typing import Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from stages.lib.core.errors import UserError
from stages.lib.params.schema import OPTIONAL_SECTIONS, Config

# Keys that no longer exist, and what to write instead.
REMOVED = {
    "train.amp": "train.amp was removed: train.precision is the one mixed-precision knob (auto | bf16 | fp16 | "
    "fp32; amp: false is precision: fp32); delete train.amp",
    "train.backbones": "train.backbones moved to the top level: write `backbones: [...]` beside `train:`, "
    "not inside it",
    "train.seed": "train.seed moved to the top level as a list: write `seeds: [42]` beside `backbones:` (one "
    "training run per backbone and seed)",
}


def checked_config(raw, source: str = "params.yaml") -> Config:
    """The Config in `raw` (params.yaml as read), or a UserError: one line naming `source`, the
    dotted key and the fix. Keys are checked first (removed, unknown, missing), then values."""
    _check_keys(raw, Config, "", source)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {_explain(err.errors()[0])}") from None


def _check_keys(raw, model: type[BaseModel], prefix: str, source: str) -> None:
    where = prefix.rstrip(".") or "the file"
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where} must be a mapping of keys (see docs/params.md), got {raw!r}")
    fields = model.model_fields
    for key in raw:
        dotted = f"{prefix}{key}"
        if dotted in REMOVED:
            raise UserError(f"{source}: {REMOVED[dotted]}")
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"{where} has {', '.join(fields)}"
            raise UserError(f"{source}: unknown key {dotted}; {hint}")
    for key, field in fields.items():
        dotted = f"{prefix}{key}"
        if key not in raw and dotted in OPTIONAL_SECTIONS:
            continue
        if key not in raw:
            default = field.get_default(call_default_factory=True)
            default = default.model_dump() if isinstance(default, BaseModel) else default
            raise UserError(
                f"{source}: {dotted} is missing; add it (default: {as_yaml({key: default})}). "
                f"Every param must be in {source}, where DVC tracks it"
            )
        sub = _section(field)
        if sub is not None and raw[key] is not None:
            _check_keys(raw[key], sub, f"{dotted}.", source)


def _explain(error: dict) -> str:
    """'<dotted key> must be <rule>, got <value>' for one pydantic error."""
    loc = [str(part) for part in error["loc"] if isinstance(part, str)]
    key, value = ".".join(loc), error["input"]
    if error["type"] == "sentence":
        return f"{key} {error['msg']}".strip()  # a whole-file rule names its keys itself
    if error["type"] == "rule":
        rule = error["msg"]
    else:
        rule = f"must be {allowed(_field(loc))}" if _field(loc) else error["msg"].replace("Input should be", "must be")
    quoted = isinstance(value, str) and re.fullmatch(r"[-+.\deE]+|true|false", value.strip(), re.IGNORECASE)
    return f"{key} {rule}, got {value!r}" + ("; write it without quotes" if quoted else "")


def _field(loc: list[str]) -> FieldInfo | None:
    model, field = Config, None
    for part in loc:
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        model = _section(field)
    return field


def allowed(field: FieldInfo) -> str:
    """What a field accepts, from its declaration: 'an integer from 32 to 1024'."""
    if field.json_schema_extra and "allowed" in field.json_schema_extra:
        return field.json_schema_extra["allowed"]
    kind = field.annotation
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(map(str, get_args(kind)))
    noun = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, getattr(kind, "__name__", str(kind)))
    limits = {k: getattr(m, k) for m in field.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    if "ge" in limits and "le" in limits:
        return f"{noun} from {limits['ge']} to {limits['le']}"
    low = f"[{limits['ge']}" if "ge" in limits else f"({limits['gt']}" if "gt" in limits else ""
    high = f"{limits['le']}]" if "le" in limits else f"{limits['lt']})" if "lt" in limits else ""
    if low and high:
        return f"{noun} in {low}, {high}"
    return " ".join(
        [noun]
        + [f"{op} {limits[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in limits]
    )


def _section(field: FieldInfo) -> type[BaseModel] | None:
    kinds = [k for k in get_args(field.annotation) if k is not type(None)] or [field.annotation]  # Optional[X] -> X
    return kinds[0] if isinstance(kinds[0], type) and issubclass(kinds[0], BaseModel) else None


def sections(model: type[BaseModel] = Config, prefix: str = ""):
    """(dotted key, FieldInfo, sub-model or None) for every param, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        sub = _section(field)
        yield prefix + name, field, sub
        if sub is not None:
            yield from sections(sub, f"{prefix}{name}.")


def as_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).removesuffix("\n...\n").strip()
