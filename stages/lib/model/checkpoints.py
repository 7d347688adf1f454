"""Checkpoints: the best model (weights + metadata), and the last-epoch state that resumes a killed run.

The resume state is trusted only when the run that wrote it was interrupted and used the same
params, the same preprocessed data and the same code (the train stage's deps in dvc.yaml);
anything else starts over, and says why. Everything is saved as plain types and tensors, so
every file loads with torch.load(weights_only=True).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from stages.lib.model.checkpoint_meta import check_meta
from stages.lib.core.errors import UserError
from stages.lib.core import live_logs
from stages.lib.core.files import atomic_path, write_text


# --- the best model ----------------------------------------------------------------------------

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
        raise UserError(f"{path} is not a checkpoint written by the train stage ({err.__class__.__name__}); "
                        f"retrain it (dvc repro --force train)") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("meta"), dict):
        raise UserError(f"{path} lacks state_dict/meta; retrain it with this version of the train stage")
    check_meta(ckpt["meta"], path)  # what predict and evaluate rebuild the model from
    return ckpt


# --- the state of an interrupted run -----------------------------------------------------------

def train_code(root: str | os.PathLike = ".") -> list[Path]:
    """The train stage's code deps as dvc.yaml lists them: a change to any invalidates a resume."""
    path = Path(root) / "dvc.yaml"
    try:
        stage = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]["train"]
        deps = stage.get("do", stage)["deps"]  # a foreach stage keeps them under `do`, a matrix stage not
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise UserError(f"cannot read the train stage's deps from {path} ({err.__class__.__name__}); "
                        f"run the stage from the project root") from err
    code = []
    for dep in map(str, deps):
        if dep.endswith(".py"):
            code.append(Path(root) / dep)
        elif dep.startswith(("stages/", "tools/")):  # a room of stages/lib: every module in it
            code += sorted((Path(root) / dep).rglob("*.py"))
    return code


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


def load_resume_state(path: str | os.PathLike, fp: str) -> tuple[dict | None, str]:
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
    for tsv in live_logs.metric_files(live_dir):
        rows = live_logs.read_rows(tsv)
        kept = live_logs.rows_up_to(rows, last_epoch)
        if len(kept) != len(rows):
            write_text(tsv, live_logs.as_tsv(kept))


# --- random state: everything a resumed run needs to draw what the uninterrupted run drew -------

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
