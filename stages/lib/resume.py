"""Resuming an interrupted train stage: the last-epoch checkpoint and when it may be trusted.

A checkpoint is resumed only when the run that wrote it was interrupted and used the same
params, the same preprocessed data and the same code; anything else starts over, and says why.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import torch

from stages.lib.io import atomic_path, write_text

# The code whose change must invalidate a half-finished run (the train stage's deps in dvc.yaml).
CODE = ("stages/train.py", "stages/lib/data.py", "stages/lib/models.py", "stages/lib/training.py",
        "stages/lib/transforms.py", "stages/lib/resume.py", "stages/lib/distributed.py")


def fingerprint(backbone: str, params: dict, cache_dir: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """sha256 over the backbone, the params it trains with, the cache and the code. The cache enters
    through meta.json, which holds every cache file's SHA-256 (checked by data.verify_cache before
    training), so the arrays are not hashed a second time."""
    h = hashlib.sha256()
    h.update(json.dumps({"backbone": backbone, "params": params}, sort_keys=True, default=str).encode())
    h.update((Path(cache_dir) / "meta.json").read_bytes())
    for name in CODE:
        path = Path(root) / name
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()


def save(path: str | os.PathLike, state: dict, fp: str) -> None:
    with atomic_path(path) as tmp:
        torch.save({**state, "fingerprint": fp}, tmp)


def load(path: str | os.PathLike, fp: str) -> tuple[dict | None, str]:
    """(state to resume, or None; a sentence saying what happens and why)."""
    path = Path(path)
    if not path.is_file():
        return None, "no interrupted run to resume; training from epoch 1"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a checkpoint we cannot read is one we cannot trust
        return None, f"{path} is unreadable ({err.__class__.__name__}); training from epoch 1"
    if state.get("fingerprint") != fp:
        return None, f"{path} was written with other params, data or code; training from epoch 1"
    if state["progress"]["finished"]:
        return None, f"{path} belongs to a finished run; training again from epoch 1"
    return state, f"resuming from {path}: epoch {state['progress']['epoch']} done, continuing"


def trim_live_logs(live_dir: str | os.PathLike, last_epoch: int) -> None:
    """Drop DVCLive rows logged after `last_epoch` (an epoch the kill cut short of its checkpoint)."""
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        step = rows[0].index("step") if rows else 0
        kept = rows[:1] + [r for r in rows[1:] if int(r[step]) <= last_epoch]
        if len(kept) != len(rows):
            write_text(tsv, "".join("\t".join(r) + "\n" for r in kept))
