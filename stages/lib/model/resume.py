"""The state of an interrupted training run: its file, the random state it resumes with, the DVCLive rows an
epoch cut short left, and when it may be resumed. The state is trusted only when the run that wrote it was
interrupted and used the same params, the same preprocessed data and the same code (the train stage's deps
in dvc.yaml); anything else starts over, and says why. Plain types and tensors only:
torch.load(weights_only=True)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from stages.lib.core import live_logs
from stages.lib.core.errors import UserError
from stages.lib.core.files import atomic_path, write_text


def train_code(root: str | os.PathLike = ".") -> list[Path]:
    """The train stage's code deps, the .py files dvc.yaml lists (exactly what it imports: `make deps`): a
    change to any invalidates a resume; a change to a module training does not import does not."""
    path = Path(root) / "dvc.yaml"
    try:
        stage = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]["train"]
        deps = stage.get("do", stage)["deps"]  # a foreach stage keeps them under `do`, a matrix stage not
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise UserError(
            f"cannot read the train stage's deps from {path} ({err.__class__.__name__}); "
            f"run the stage from the project root"
        ) from err
    return [Path(root) / dep for dep in map(str, deps) if dep.endswith(".py")]


def fingerprint(backbone: str, params: dict, cache_dir: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """sha256 over the backbone, the params it trains with, the cache and the code. The cache enters
    through meta.json, which holds every cache file's SHA-256 (checked by data.verify_cache before
    training), so the arrays are not hashed a second time."""
    h = hashlib.sha256()
    h.update(json.dumps({"backbone": backbone, "params": params}, sort_keys=True, default=str).encode())
    h.update((Path(cache_dir) / "meta.json").read_bytes())
    for path in train_code(root):
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()


def save_resume_state(path: str | os.PathLike, state: dict, fp: str) -> None:
    with atomic_path(path) as tmp:
        torch.save({**state, "fingerprint": fp}, tmp)


def load_resume_state(path: str | os.PathLike, fp: str, model_path: str | os.PathLike) -> tuple[dict | None, str]:
    """(state to resume, or None; a sentence saying what happens and why). A run resumes with the best
    model it kept (`model_path`) as well as its state, so without that file it starts over."""
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
    if not Path(model_path).is_file():
        return None, f"{model_path} is missing, so the interrupted run cannot be resumed; training from epoch 1"
    return state, f"resuming from {path}: epoch {state['progress']['epoch']} done, continuing"


def trim_live_logs(live_dir: str | os.PathLike, last_epoch: int) -> None:
    """Drop DVCLive rows logged after `last_epoch` (an epoch the kill cut short of its checkpoint)."""
    for tsv in live_logs.metric_files(live_dir):
        rows = live_logs.read_rows(tsv)
        kept = live_logs.rows_up_to(rows, last_epoch)
        if len(kept) != len(rows):
            write_text(tsv, live_logs.as_tsv(kept))


# The random state: everything a resumed run needs to draw what the uninterrupted run drew (plain types).
def _augment_rngs(loader: DataLoader) -> list:
    augment = loader.dataset.augment
    return [augment, *augment.transforms] if augment is not None else []


def rng_state(loader: DataLoader) -> dict:
    """Python, NumPy, torch (CPU, CUDA), the sampler's generator and the augmentation RNGs.

    Plain types and tensors only, so the checkpoint loads with weights_only=True. (With DataLoader
    workers the augmentations run in the workers, whose RNGs are not captured: see docs/design.md.)
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": loader.generator.get_state(),
        "augment": [(a.random_generator.bit_generator.state, a.py_random.getstate()) for a in _augment_rngs(loader)],
    }


def set_rng_state(state: dict, loader: DataLoader) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader.generator.set_state(state["sampler"])
    for a, (np_state, py_state) in zip(_augment_rngs(loader), state["augment"]):
        a.random_generator.bit_generator.state = np_state
        a.py_random.setstate(py_state)
