"""`make quality`: how stable the pipeline's results are on real films, and what seeds buy.

    python -m bench.quality                    # ../shared/data/cxr4 -> bench/results/quality.json
    python -m bench.quality --smoke --out X    # tiny synthetic films, one epoch: checks the script

Runs the study's protocol at CPU size (from scratch, lr 1e-3, 128 px, up to 15 epochs, early stopping
and the plateau schedule as params.yaml has them) through `dvc repro` of a temporary copy of the
project, with `--seeds` runs of each of `--backbones`, on the real films of ../shared/data/cxr4
(160 train / 40 val / 40 test, 40 per class). Writes, per backbone: each seed's test macro-F1 and
their mean +- sd, the seed ensemble's and its gain over the mean seed, the pooled CI of one run, the
paired differences to both shortcuts (file metadata only; the film outside the lungs only) and whether
it beats the stronger, its scores with the lungs hidden, and the training time per run; plus the
all-run ensemble alike, each shortcut's own score with its CI and recall per class, and the wall time.
Every per-image prediction it was computed from goes beside it (<out>_predictions/, as predictions/ in
the pipeline), so a later comparison needs no retraining. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench import common
from stages.lib.core.errors import UserError, cli
from stages.lib.core.names import ENSEMBLE, PIXEL_SHORTCUT, SHORTCUT, SHORTCUTS, seed_run
from stages.lib.core.staging import staging_dir, swap_in
from stages.lib.results.comparisons import beats, paired_difference, sentence, stronger
from stages.lib.results.evaluation import read_runs
from stages.lib.results.metrics import METRICS, bootstrap_ci
from tools.project_copy import copy_project, merge

ROOT = Path(__file__).resolve().parents[1]
# The model cards quote the notice; evaluate depends on cache_external/, even with no external set.
PROJECT_FILES = ("stages", "tools", "docs/notice.md", "dvc.yaml", "params.yaml", "cache_external/README.md")
PROTOCOL = {"preprocess": {"img_size": 128}, "train": {"pretrained": False, "lr": 1e-3, "epochs": 15}}
SMOKE = {
    "preprocess": {"img_size": 32},
    "data": {"min_val": 4},
    "train": {"pretrained": False, "lr": 1e-3, "epochs": 1, "batch_size": 8},
}
GOAL_GAIN = 0.02  # the seed ensemble over the mean single seed, test macro-F1


def make_project(dest: Path, data: Path, overrides: dict) -> None:
    copy_project(dest, PROJECT_FILES, {"params.yaml": overrides}, ROOT)
    (dest / "data").symlink_to(data.resolve(), target_is_directory=True)


def repro(project: Path) -> dict[str, float]:
    """`dvc repro` in `project`, printing its output; seconds per stage (from one 'Running stage' line to the next)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).absolute().parent}{os.pathsep}{os.environ['PATH']}",
    }
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")
    proc = subprocess.Popen(
        ["dvc", "repro"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds, current, start = {}, None, time.perf_counter()
    for line in proc.stdout:
        print(line, end="", flush=True)
        if m := re.match(r"Running stage '(.+)':", line):
            now = time.perf_counter()
            if current:
                seconds[current] = round(now - start, 1)
            current, start = m.group(1), now
    if proc.wait() != 0:
        raise UserError(f"dvc repro failed in {project} (exit {proc.returncode}); its output is above")
    if current:
        seconds[current] = round(time.perf_counter() - start, 1)
    return seconds


def versus_shortcuts(name: str, labels, runs, floors: dict, resamples: int) -> dict:
    """`name` (its runs [seeds, N, C] on test, one fixed model) minus each shortcut, paired over the test films."""
    out = {}
    for shortcut, probs in floors.items():
        d = paired_difference(labels, runs, probs, resamples, 0)["macro_f1"]
        out |= {
            f"minus_{shortcut}": sentence(name, shortcut, "macro_f1", d),
            f"minus_{shortcut}_ci95": [round(v, 4) for v in d["ci95"]],
            f"beats_{shortcut}": beats(d),
        }
    return out


def rounded(x):
    """Every float in a JSON-like value to 4 decimals."""
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return [rounded(v) for v in x] if isinstance(x, list) else x


def shortcut_scores(project: Path, labels, floors: dict, resamples: int) -> dict:
    """Each shortcut's test macro-F1 with its bootstrap 95% CI (as the networks'), recall per class, and what it is."""
    report = json.loads((project / "metrics" / "data_report.json").read_text())["shortcut"]
    pixel = json.loads((project / "metrics" / f"{PIXEL_SHORTCUT}.json").read_text())
    known = labels >= 0
    out = {
        f"{name}_test_macro_f1_ci95": [
            round(v, 4)
            for v in bootstrap_ci(labels[known], floors[name][0][known], METRICS["macro_f1"].batch, resamples, 0)
        ]
        for name in SHORTCUTS
    }
    return out | {
        "shortcut_test_macro_f1": report["test"]["macro_f1"],
        "shortcut_test_recall": report["test"]["per_class_recall"],
        "pixel_shortcut_test_macro_f1": round(pixel["test"]["macro_f1"], 4),
        "pixel_shortcut_test_recall": {c: round(v["recall"], 4) for c, v in pixel["test"]["per_class"].items()},
        "pixel_shortcut_chosen": pixel["chosen"],
        "pixel_shortcut_val_macro_f1_of_each_candidate": pixel["val_macro_f1_of_each_candidate"],
        "hide_lungs": pixel["hide_lungs"],
    }


def measure(project: Path, backbones: list[str], seeds: list[int], seconds: dict, resamples: int) -> dict:
    """The result file's content from the pipeline's outputs in `project`."""
    meta = json.loads((project / "cache" / "meta.json").read_text())
    classes = meta["classes"]
    labels = read_runs([project / "predictions" / SHORTCUT], "test", classes)[1]
    floors = {name: read_runs([project / "predictions" / name], "test", classes)[2] for name in SHORTCUTS}
    out = {}
    for b in backbones:
        m = json.loads((project / "metrics" / f"{b}.json").read_text())
        runs = read_runs([seed_run(project / "predictions" / b, s) for s in seeds], "test", classes)[2]
        block = m["seeds"]
        mean = block["mean"]["test"]["macro_f1"]
        out[b] = {
            "test_macro_f1": {
                "mean": round(mean, 4),
                "sd": None if block["sd"] is None else round(block["sd"]["test"]["macro_f1"], 4),
                "runs": {s: round(h["test"]["macro_f1"], 4) for s, h in block["runs"].items()},
                "pooled_ci95": [round(v, 4) for v in block["pooled_ci95"]["test"]["macro_f1"]],
            },
            "seed_ensemble_test_macro_f1": round(m["test"]["macro_f1"], 4),
            "seed_ensemble_gain": round(m["test"]["macro_f1"] - mean, 4),
            "seed_ensemble_ci95": [round(v, 4) for v in m["test"]["macro_f1_ci95"]],
            **versus_shortcuts(b, labels, runs, floors, resamples),
            "lungs_hidden": rounded(m["lungs_hidden"]),
            "train_s_per_run": [seconds.get(f"train@{b}-{s}") for s in seeds],
            "best_epochs": {s: h["best_epoch"] for s, h in block["runs"].items()},
        }
    ensemble = json.loads((project / "metrics" / "ensemble.json").read_text())
    every = read_runs([seed_run(project / "predictions" / b, s) for b in backbones for s in seeds], "test", classes)[
        2
    ].mean(0, keepdims=True)  # the all-run ensemble: one fixed model, as the report's
    scores = shortcut_scores(project, labels, floors, resamples)
    best = stronger({name: scores[f"{name}_test_macro_f1"] for name in SHORTCUTS})
    for r in out.values():
        r["beats_stronger_shortcut"] = r[f"beats_{best}"]
    versus = versus_shortcuts(ENSEMBLE, labels, every, floors, resamples)
    return {
        "backbones": out,
        "ensemble_test_macro_f1": round(ensemble["test"]["macro_f1"], 4),
        **{f"ensemble_{k}": v for k, v in versus.items()},
        "ensemble_beats_stronger_shortcut": versus[f"beats_{best}"],
        "ensemble_lungs_hidden": rounded(ensemble["lungs_hidden"]),
        "stronger_shortcut": best,
        **scores,
    }


def keep_predictions(project: Path, out: Path) -> Path:
    """Every per-image predictions CSV of the run (predictions/ of `project`) into `out`, swapped in whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out, 0o755) as staging:
        for csv_file in sorted((project / "predictions").rglob("*.csv")):
            target = staging / csv_file.relative_to(project / "predictions")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(csv_file, target)
        swap_in(staging, out)
    return out


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["resnet18"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--data", type=Path, default=None, help="a course-layout folder (default: the real films)")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "quality.json")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic films, 32 px, one epoch")
    args = parser.parse_args()
    start, stamp = time.perf_counter(), common.stamp()  # the code as copied, not as it is an hour later
    with common.tempdir() as tmp:
        tmp = Path(tmp)
        if args.smoke:
            data, source = common.images(tmp, {"train": 24, "val": 8, "test": 8}, args.data)
        elif args.data or (common.REAL_DATA / "train_data.csv").is_file():
            data, source = common.images(tmp, None, args.data)
        else:
            raise UserError(f"no real films at {common.REAL_DATA}; pass --data or run --smoke")
        overrides = merge(SMOKE if args.smoke else PROTOCOL, {"backbones": args.backbones, "seeds": args.seeds})
        make_project(tmp / "project", data, overrides)
        seconds = repro(tmp / "project")
        params = yaml.safe_load((tmp / "project" / "params.yaml").read_text())
        result = {
            "data": source,
            "smoke": args.smoke,
            "protocol": {k: params[k] for k in ("preprocess", "train")},
            **measure(tmp / "project", args.backbones, args.seeds, seconds, params["evaluate"]["bootstrap_resamples"]),
            "predictions": str(keep_predictions(tmp / "project", args.out.with_name(f"{args.out.stem}_predictions"))),
            "stage_seconds": seconds,
            "wall_s": round(time.perf_counter() - start, 1),
            **stamp,
        }
    result["goal"] = {
        b: {"gain_at_least": GOAL_GAIN, "met": r["seed_ensemble_gain"] >= GOAL_GAIN}
        for b, r in result["backbones"].items()
    }
    path = common.save("quality", result, args.out)
    for b, r in result["backbones"].items():
        t = r["test_macro_f1"]
        print(
            f"{b}: test macro-F1 per seed {t['runs']}, mean {t['mean']} sd {t['sd']}; seed ensemble "
            f"{r['seed_ensemble_test_macro_f1']} ({r['seed_ensemble_gain']:+.4f}); {r['minus_shortcut']}; "
            f"{r['minus_pixel_shortcut']}; lungs hidden {r['lungs_hidden']['macro_f1']}"
        )
    print(
        f"shortcut {result['shortcut_test_macro_f1']}, pixel shortcut {result['pixel_shortcut_test_macro_f1']}, "
        f"all-run ensemble {result['ensemble_test_macro_f1']}; {result['wall_s']} s -> {path}"
    )


if __name__ == "__main__":
    main()
