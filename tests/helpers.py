"""What the tests share: the project root and real-data path, temporary project copies and the commands run
in them, tiny datasets and films, a checkpoint's settings, in-process stage and predict runs. Fixtures are in
conftest.py; the tests import the rest from here (`from helpers import ...`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from stages.lib.data.formats import ROBUST_PERCENTILES
from stages.lib.params.schema import Augment, Preprocess
from tools.project_copy import copy_project, merge  # noqa: F401 (merge: for the tests)

ROOT = Path(__file__).resolve().parents[1]


REAL_DATA = ROOT.parent / "shared" / "data" / "cxr4"


PROJECT_FILES = (
    "stages",
    "tools",
    "sources",
    "Makefile",
    "pyproject.toml",
    "dvc.yaml",
    "params.yaml",
    "demo/dvc.yaml",
    "demo/params.yaml",
    "docs/notice.md",
    "demo/.dvc/config",
    "demo/.dvc/.gitignore",
    "demo/.dvcignore",
    "demo/.gitignore",
    "cache_external/README.md",
    "demo/cache_external/README.md",
)


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
    """Run a command with the project's venv first on PATH and that project copy's code importable, writing
    bytecode as a user's Python does; output captured as text."""
    env = dict(
        {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        PATH=f"{Path(sys.executable).absolute().parent}{os.pathsep}{os.environ['PATH']}",
        DVC_NO_ANALYTICS="1",
        PYTHONPATH=str(project_root(cwd)),
        # one fixed commit date: two identical test projects get the same commit (provenance stamps)
        GIT_AUTHOR_DATE="2026-01-01T00:00:00+0000",
        GIT_COMMITTER_DATE="2026-01-01T00:00:00+0000",
    )
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose requirement is missing here, with the reason; in CI (CI=true, as CI services set
    it) the requirement is part of the setup, so its absence fails the test instead of hiding it."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


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
    return shlex.split(
        cmd.replace("${item.backbone}", item).replace("${item.seed}", str(seed)).replace("${item}", item)
    )


def run_paths(backbone: str, seed: int = 42) -> dict[str, str]:
    """Where dvc.yaml puts one run's files (relative to the project)."""
    run = f"{backbone}/seed{seed}"
    return {
        "model": f"models/{run}.pt",
        "resume": f"checkpoints/{run}.pt",
        "live": f"dvclive/{run}",
        "metrics": f"metrics/{run}.json",
        "predictions": f"predictions/{backbone}/seeds/seed{seed}",
        "gradcam": f"plots/gradcam/{run}.png",
    }


# The demo at the smallest size that still has every class in every split: the session's one run

# of the whole pipeline through `make demo`, which the tests read (copy it before changing it).
TINY_DEMO = {
    # val: 20 films, the fewest a temperature and a prediction-set threshold are fitted from (posthoc.MIN_FILMS)
    "synthetic": {"train": 32, "val": 20, "test": 16, "external": 16},
    "preprocess": {"img_size": 32},
    "data": {"min_val": 4},
    "backbones": ["resnet18", "efficientnet_b0"],
    "train": {"epochs": 1, "batch_size": 8},
}


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
    from stages.lib.params.loader import load_params
    from stages.lib.params.schema import Data

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

    params = merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        {"preprocess": {"img_size": 32}, "data": {"min_val": 1, **data}},
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", stage_cmd("preprocess")[2:])
    try:
        stages.preprocess.main()
        code = 0
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err.strip()


ROWS, COLS = 40, 60  # not square, so a transpose would show


def gradient(maximum: int, dtype) -> np.ndarray:
    """Dark top row to bright bottom row, with a bright mark in the top-left corner."""
    img = np.repeat(np.linspace(0, maximum, ROWS), COLS).reshape(ROWS, COLS).astype(dtype)
    img[:4, :4] = maximum
    return img


def by_values_present(values: np.ndarray) -> np.ndarray:
    """The documented rule for a DICOM without a VOI: the values at its robust percentiles mapped to 0..255."""
    lo, hi = np.percentile(values, ROBUST_PERCENTILES, method="nearest").astype(float)
    return np.clip(np.round((values.astype(float) - lo) * 255 / (hi - lo)), 0, 255)


def write_dicom(path, pixels: np.ndarray, photometric: str, bits_stored: int, **extra) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "P-0042"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


P32 = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)


HEADER = "filename,predicted_label,prob_normal,prob_bacteria,prob_virus,prob_COVID-19"


def run_predict(argv, monkeypatch, capsys) -> tuple[int, str, str]:
    """`cxr4-predict argv` in-process: (exit code, stdout, stderr)."""
    import stages.predict

    monkeypatch.setattr(sys, "argv", ["cxr4-predict", *map(str, argv)])
    try:
        stages.predict.main()
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


SEED = 42


SIZE = 8


NO_AUGMENT = Augment(affine_p=0, brightness_contrast_p=0, noise_p=0, hflip_p=0)


def tiny_cache(root, train_counts=(6, 6, 6, 6), val_per_class=2):
    """A cache as preprocess writes it: random uint8 films, <split>.npy + <split>.csv + meta.json."""
    classes = ["normal", "bacteria", "virus", "COVID-19"]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": dict(zip(classes, train_counts)), "val": dict.fromkeys(classes, val_per_class)}
    for split, per_class in counts.items():
        labels = [c for c, n in per_class.items() for _ in range(n)]
        np.save(root / f"{split}.npy", rng.integers(0, 256, (len(labels), SIZE, SIZE), dtype=np.uint8))
        (root / f"{split}.csv").write_text(
            "filename,label\n" + "".join(f"{split}{i}.png,{c}\n" for i, c in enumerate(labels))
        )
    (root / "meta.json").write_text(
        json.dumps({"classes": classes, "counts": counts, "preprocess": {"img_size": SIZE}})
    )
    return root


def demo_like(n: int, seed: int, sharpness: float = 1.0):
    """Labels and softmax probabilities of a model with some skill over 4 classes; `sharpness` > 1
    makes it overconfident (logits scaled up after the labels are drawn from the true ones)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 4))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.minimum((rng.random((n, 1)) > true.cumsum(1)).sum(1), 3)  # one draw from each row's true p
    shown = np.exp(sharpness * logits)
    return labels, shown / shown.sum(1, keepdims=True)


def reported_intervals(report) -> list[tuple[str, float, list]]:
    """Every (where, point, [low, high]) a metrics JSON reports: `<key>_ci95` beside `<key>` (`before`/`after`
    included), a comparison's `ci95` beside its `difference`, and `pooled_ci95` beside the seeds' `mean`."""
    found = []

    def walk(node, where):
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key.endswith("_ci95") and key != "pooled_ci95":
                found.append((f"{where}.{key}", node[key.removesuffix("_ci95")], value))
            elif key == "ci95" and "difference" in node:
                found.append((f"{where}.ci95", node["difference"], value))
            elif key == "pooled_ci95":
                for split, cis in value.items():
                    found.extend(
                        (f"{where}.pooled_ci95.{split}.{k}", node["mean"][split][k], ci) for k, ci in cis.items()
                    )
                continue
            walk(value, f"{where}.{key}")

    walk(report, "")
    return found


# A point with its interval as the summary and the cards print it: 0.846 [0.732, 0.921], +0.613 [+0.484, +0.718]
PRINTED_CI = r"([+\-−]?\d+\.\d+) \[([+\-−]?\d+\.\d+), ([+\-−]?\d+\.\d+)\]"


# preprocess on `sys.argv[1]`/data, each film's decoding slowed to 0.3 s in the workers, so a test can kill or
# interrupt it while they work (run with `python -c SLOW_PREPROCESS <folder>` from the project root)
SLOW_PREPROCESS = """
import sys, time
from stages.lib.core.errors import cli
from stages.lib.data import cache_writer
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Data, Preprocess
from stages.preprocess import build_cache

decode = cache_writer._process
def slow(path):
    time.sleep(0.3)
    return decode(path)
slow.__module__, slow.__qualname__ = "stages.lib.data.cache_writer", "_process"  # pickled by name into the workers
cache_writer._process = slow
root = sys.argv[1]
P32 = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)
data = Data.model_validate({**load_params("params.yaml").data.model_dump(), "min_val": 1})
cli(build_cache)(root + "/data", root + "/cache", root + "/report.json", P32, data, workers=2)
"""
