"""Shared fixtures: tiny synthetic data, the real cxr4 sample when present, temp project copies."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.project_copy import copy_project, merge  # noqa: F401 (merge: for the tests)

# The thread count changes CPU results; the tests (and the stages they start) run with 2, as `make demo`
# does, before anything starts torch. stages/__init__.py pins the instruction set.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "2")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "cxr4"
PROJECT_FILES = ("stages", "tools", "sources", "Makefile", "pyproject.toml", "dvc.yaml", "params.yaml", "demo/dvc.yaml",
                 "demo/params.yaml", "docs/notice.md", "demo/.dvc/config", "demo/.dvc/.gitignore", "demo/.dvcignore",
                 "demo/.gitignore", "cache_external/README.md", "demo/cache_external/README.md")



# Tiny settings: 32 px, one epoch, two backbones, no ImageNet download; the tiny data's val is kept.
TINY = {
    "seeds": [42],
    "preprocess": {"img_size": 32},
    "data": {"min_val": 4},
    "backbones": ["resnet18", "efficientnet_b0"],
    "train": {"pretrained": False, "epochs": 1, "batch_size": 8, "lr": 1e-3},
}


def project_root(path: Path) -> Path:
    """The project copy `path` belongs to (the folder holding stages/), e.g. for a command run in demo/."""
    path = Path(path).absolute()
    return next((p for p in (path, *path.parents) if (p / "stages").is_dir()), path)


def run(cmd, cwd, check=True, **kw) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH and that project copy's code importable;
    output captured as text."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).absolute().parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", PYTHONPATH=str(project_root(cwd)),
               # one fixed commit date: two identical test projects get the same commit (provenance stamps)
               GIT_AUTHOR_DATE="2026-01-01T00:00:00+0000", GIT_COMMITTER_DATE="2026-01-01T00:00:00+0000")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small synthetic course-layout dataset (real-size images, few of them)."""
    from stages.lib.data.synthetic import make_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(out, {"train": 32, "val": 12, "test": 12}, seed=3, fractions=(0.25, 0.25, 0.25, 0.25))
    return out


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose requirement is missing here, with the reason; in CI (CI=true, as CI services set
    it) the requirement is part of the setup, so its absence fails the test instead of hiding it."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "train_data.csv").is_file():
        skip_unless_ci(f"real sample not present at {REAL_DATA}")
    return REAL_DATA


def make_project(dest: Path, data: Path | None, overrides: dict, git: bool = True, demo: dict | None = None) -> Path:
    """Copy the project (code, pipelines, params) into dest with params overridden and data linked in.

    `overrides` go over params.yaml, `demo` over demo/params.yaml. With git, the copy is a git
    repository with DVC initialised (the demo a DVC project of its own) and everything committed.
    """
    copy_project(dest, PROJECT_FILES, {"params.yaml": overrides, "demo/params.yaml": demo or {}}, ROOT)
    if data is not None:
        shutil.copytree(data, dest / "data")
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@localhost"], dest)
        run(["git", "config", "user.name", "test"], dest)
        run(["dvc", "init", "-q"], dest)
        run(["dvc", "config", "core.analytics", "false"], dest)
        shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots")
        if data is not None:
            run(["dvc", "add", "-q", "data"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "test project"], dest)
    return dest


def stage_cmd(stage: str, item: str = "", seed: int = 42, pipeline: Path = ROOT / "dvc.yaml") -> list[str]:
    """A stage's command as dvc.yaml writes it, as argv: a foreach stage's `${item}` is `item`, a
    backbone x seed matrix stage's `${item.backbone}` and `${item.seed}` are `item` and `seed`."""
    spec = yaml.safe_load(pipeline.read_text())["stages"][stage]
    cmd = spec.get("do", spec)["cmd"]
    return shlex.split(cmd.replace("${item.backbone}", item).replace("${item.seed}", str(seed)).replace("${item}", item))


def run_paths(backbone: str, seed: int = 42) -> dict[str, str]:
    """Where dvc.yaml puts one run's files (relative to the project)."""
    run = f"{backbone}/seed{seed}"
    return {"model": f"models/{run}.pt", "resume": f"checkpoints/{run}.pt", "live": f"dvclive/{run}",
            "metrics": f"metrics/{run}.json", "predictions": f"predictions/{backbone}/seeds/seed{seed}",
            "gradcam": f"plots/gradcam/{run}.png"}


# The demo at the smallest size that still has every class in every split: the session's one run
# of the whole pipeline through `make demo`, which the tests read (copy it before changing it).
TINY_DEMO = {
    "synthetic": {"train": 32, "val": 16, "test": 16, "external": 16},
    "preprocess": {"img_size": 32},
    "data": {"min_val": 4},
    "backbones": ["resnet18", "efficientnet_b0"],
    "train": {"epochs": 1, "batch_size": 8},
}


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("demo") / "proj", None, {}, demo=TINY_DEMO)
    run(["make", "demo", f"VENV={Path(sys.prefix)}", "STAMP="], proj)
    return proj


def write_xray(path: Path, seed: int, shape=(48, 40)) -> Path:
    """A small distinct image: upsampled noise, fine enough that a resized copy keeps its perceptual hash."""
    import cv2
    import numpy as np

    noise = np.random.default_rng(seed).normal(0, 1, (24, 20)).astype(np.float32)
    img = cv2.resize(noise, shape[::-1], interpolation=cv2.INTER_CUBIC)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


CLASS_NAMES = ("normal", "bacteria", "virus", "COVID-19")


def course_tree(root: Path, per_split=(("train", 3), ("val", 1), ("test", 1))) -> Path:
    """A tiny course-layout dataset: `n` distinct PNGs per class and split, all labelled."""
    seed = 0
    for split, n in per_split:
        rows = ["new_filename," + ",".join(CLASS_NAMES)]
        for c in range(4):
            for _ in range(n):
                seed += 1
                write_xray(root / f"{split}_images" / f"{split}{seed}.png", seed)
                rows.append(f"{split}{seed}.png," + ",".join("1" if k == c else "0" for k in range(4)))
        (root / f"{split}_data.csv").write_text("\n".join(rows) + "\n")
    return root


def data_params(**overrides):
    """params.yaml's `data` section with some values changed, validated."""
    from stages.lib.params.schema import Data
    from stages.lib.params.loader import load_params

    return Data.model_validate({**load_params(ROOT / "params.yaml").data.model_dump(), **overrides})


def manifest_tree(root: Path) -> Path:
    """A tiny manifest-layout dataset: 16 distinct PNGs, 2 per class in train, 1 in val and test."""
    rows = ["path,label,split"]
    for i in range(16):
        split = ("train", "train", "val", "test")[i // 4]
        write_xray(root / "img" / f"m{i}.png", 100 + i)
        rows.append(f"img/m{i}.png,{('normal', 'bacteria', 'virus', 'covid-19')[i % 4]},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


REPORT = "metrics/data_report.json"


def preprocess(project: Path, monkeypatch, capsys, **data) -> tuple[int, str]:
    """Run the preprocess stage in-process in `project`; returns (exit code, stderr)."""
    import stages.preprocess

    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                   {"preprocess": {"img_size": 32}, "data": {"min_val": 1, **data}})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", stage_cmd("preprocess")[2:])
    try:
        stages.preprocess.main()
        code = 0
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err.strip()
