"""Atomic file writes and params loading.

Every output goes through `atomic_path`: a killed stage leaves either the previous file or the
new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from stages.lib.core.errors import UserError

if TYPE_CHECKING:  # imported where params are read: the GPU check writes JSON before pydantic is there
    from stages.lib.params.schema import Config


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, on failure delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}; check the folder exists and is writable") from err
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror}; check free disk space and permissions") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")  # NaN is not JSON: use None


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UserError(f"{path} not found; run the stage that writes it first (dvc repro)") from err


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2's core schema, as DVC reads params.yaml: `1e-3` is a number (PyYAML's 1.1 rules
    read it as a string), `yes`/`no`/`on`/`off` are strings, a key given twice is refused."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        for k, (key_node, _) in zip(keys, node.value):
            if keys.count(k) > 1:
                raise UserError(f"{key_node.start_mark.name}: key {k!r} appears twice (line "
                                f"{key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep)


YAML_1_2_CORE = (  # (tag, pattern, first characters): replace 1.1's bool, int, float and timestamp rules
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
     "-+0123456789."),
)
ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for tag, pattern, first in YAML_1_2_CORE:
    ParamsLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(f"^(?:{pattern})$"), list(first))


def _core_int(loader: ParamsLoader, node) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text)  # 1.2: 010 is ten, not eight


ParamsLoader.add_constructor("tag:yaml.org,2002:int", _core_int)


def load_params(path: str | os.PathLike = "params.yaml") -> Config:
    """params.yaml, validated: every stage's one source of hyperparameters (see stages/lib/params/schema.py)."""
    from stages.lib.params.schema import validate

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=ParamsLoader)
    except FileNotFoundError as err:
        raise UserError(f"{path} not found; run from the project root") from err
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err.__class__.__name__}); fix the syntax") from err
    return validate({} if raw is None else raw, str(path))
