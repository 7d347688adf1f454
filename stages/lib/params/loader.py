"""params.yaml read as DVC reads it (YAML 1.2's core schema) and checked against the schema, once per stage."""

from __future__ import annotations

import os
import re

import yaml

from stages.lib.core.errors import UserError
from stages.lib.params.messages import checked_config
from stages.lib.params.schema import Config


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2's core schema, as DVC reads params.yaml: `1e-3` is a number (PyYAML's 1.1 rules
    read it as a string), `yes`/`no`/`on`/`off` are strings, a key given twice is refused."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        for k, (key_node, _) in zip(keys, node.value):
            if keys.count(k) > 1:
                raise UserError(
                    f"{key_node.start_mark.name}: key {k!r} appears twice (line "
                    f"{key_node.start_mark.line + 1}); keep one"
                )
        return super().construct_mapping(node, deep)


YAML_1_2_CORE = (  # (tag, pattern, first characters): replace 1.1's bool, int, float and timestamp rules
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        "-+0123456789.",
    ),
)
ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for tag, pattern, first in YAML_1_2_CORE:
    ParamsLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(f"^(?:{pattern})$"), list(first))


def _core_int(loader: ParamsLoader, node) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text)  # 1.2: 010 is ten, not eight


ParamsLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


def load_params(path: str | os.PathLike = "params.yaml") -> Config:
    """params.yaml, validated: every stage's one source of hyperparameters (see stages/lib/params/schema.py)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=ParamsLoader)
    except FileNotFoundError as err:
        raise UserError(f"{path} not found; run from the project root") from err
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err.__class__.__name__}); fix the syntax") from err
    return checked_config({} if raw is None else raw, str(path))
