"""A copy of the project with other params: the tests' temporary projects, bench.quality's runs and the
GPU check's pipeline. Standard library and PyYAML only: the GPU check calls it on a bare Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` written over it, section by section."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def copy_project(
    dest: Path, names, params: dict[str, dict] | None = None, root: Path = ROOT, missing_ok: bool = False
) -> dict[str, dict]:
    """Copy the files and folders `names` (relative to `root`; folders without __pycache__) into `dest`,
    then each params file of `params` ({"demo/params.yaml": overrides, ...}) with its overrides merged
    over it; a file without overrides stays as written. Returns the params files written, as dicts."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, to = root / name, dest / name
        to.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists() or not missing_ok:
            shutil.copy2(src, to)
    written = {}
    for name, overrides in (params or {}).items():
        if overrides:
            written[name] = merge(yaml.safe_load((root / name).read_text()), overrides)
            (dest / name).write_text(yaml.safe_dump(written[name], sort_keys=False))
    return written
