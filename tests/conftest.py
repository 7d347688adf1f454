"""Shared fixtures: tiny synthetic data, the real cxr4 sample when present, temp project copies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The thread count changes CPU results; the tests (and the stages they start) run with 2, as `make demo`
# does, before anything starts torch. stages/__init__.py pins the instruction set.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "2")
# Stages, DVC and the console commands run as on a user's machine, where Python writes __pycache__ beside
# the code it imports (a bytecode file must never make a stage look changed); some CI images turn it off.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

from helpers import P32, REAL_DATA, TINY_DEMO, make_project, run, skip_unless_ci  # noqa: E402 (after the thread count)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small synthetic course-layout dataset (real-size images, few of them)."""
    from stages.lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(out, {"train": 32, "val": 12, "test": 12}, seed=3, fractions=(0.25, 0.25, 0.25, 0.25))
    return out


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "train_data.csv").is_file():
        skip_unless_ci(f"real sample not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("demo") / "proj", None, {}, demo=TINY_DEMO)
    run(["make", "demo", f"VENV={Path(sys.prefix)}", "STAMP="], proj)
    return proj


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained ResNet-18 checkpoint as the train stage writes it (weights + metadata), 32 px."""
    import torch

    from stages.lib.core.names import STUDY_CLASSES
    from stages.lib.model.checkpoints import save_checkpoint
    from stages.lib.model.networks import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", len(STUDY_CLASSES), 0.1, pretrained=False)
    path = tmp_path_factory.mktemp("model") / "resnet18" / "seed42.pt"
    save_checkpoint(
        path,
        model,
        {"backbone": "resnet18", "classes": list(STUDY_CLASSES), "preprocess": P32.model_dump(), "dropout": 0.1},
    )
    return path


def pytest_collection_modifyitems(items):
    """A test that reads the session's demo run is as slow as that run (`pytest -m "not slow"` skips them)."""
    for item in items:
        if "demo_project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
