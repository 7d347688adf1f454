"""The best model's file: weights and plain metadata, so it loads with torch.load(weights_only=True) and
no project class is pickled by its module path. The state that resumes a killed run is resume.py's."""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from stages.lib.core.errors import UserError
from stages.lib.core.files import atomic_path
from stages.lib.model.checkpoint_meta import check_meta


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
