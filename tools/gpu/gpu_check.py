"""`make gpu-check`: prove the GPU path in one command on a fresh CUDA machine with no registry.

    python3 -m tools.gpu.gpu_check [--results DIR]   # on the GPU machine, .whl/ carried (make gpu-wheels)
    python -m tools.gpu.gpu_check --smoke --results DIR   # CPU, tiny: checks this script (the test suite)

1. wheels: .whl/ holds one wheel per pin of tools/gpu/gpu_wheels.txt; they are unpacked into a private
   folder put first on PYTHONPATH, and every module the pipeline imports must load (checked first;
   without .whl/ the machine's own packages must do).
2. pipeline: a temporary copy of the demo project (demo/: its synthetic films, from scratch, more
   of them than the demo so an epoch lasts seconds) at the study's size (params.yaml's 256 px),
   2 epochs, the precision params ask for (bf16 autocast on a GPU that has it), channels_last and
   DataLoader workers, run end to end through `dvc repro`, or, where dvc does not import, through
   its stages in the order its dvc.yaml gives (`stage_commands`). Each stage's wall time is kept.
3. bench.gpu on that pipeline's cache for every backbone, beside its DVCLive figures, and the
   trained models' fp32 against train-precision predictions.
Then one table per backbone (`table`): stage wall times, time to first batch, epoch-1 and epoch-2
img/s, real, ceiling, real/ceiling, stage/real, and pass or fail for each goal of `GOALS`.
Writes DIR/gpu.json (bench.gpu's figures plus a `check` section: wheels, versions, stage times,
table, goals) and DIR/gpu_check.log, both also when a step fails or the time budget runs out.

Nothing here needs more than a Python with torch, PyYAML and the standard library until .whl/ is
unpacked: this module imports only those at the top (tests/test_gpu_path.py proves it with the
rest made unimportable), and everything else runs in the subprocesses started after the unpacking.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from itertools import product
from pathlib import Path

import yaml

from stages.lib.core import live_logs
from stages.lib.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from stages.lib.core.files import write_json
from stages.lib.core.names import run_name
from tools.gpu import wheels
from tools.project_copy import copy_project, merge

ROOT = Path(__file__).resolve().parents[2]
# The demo project (demo/: its generated dvc.yaml and params) with the code it runs.
PROJECT_FILES = (
    "stages",
    "tools",
    "docs/notice.md",
    "dvc.yaml",
    "params.yaml",
    ".dvc/plots",
    "demo/dvc.yaml",
    "demo/params.yaml",
    "demo/.dvc/config",
    "demo/.dvcignore",
    "demo/.gitignore",
    "demo/cache_external/README.md",
)
DEMO = "demo"
# Over demo/params.yaml (from scratch, lr 1e-3): the study's image size, 2 epochs, the study's CPU threads
# (null: torch's default, not the demo's 2), and enough films that an epoch lasts seconds on an H200 (5 s
# for DenseNet-121 and ~2 s for ResNet-18 at ~1000 img/s).
CHECK = {"train": {"epochs": 2, "threads": None}, "synthetic": {"train": 2000, "val": 200, "test": 200}}
# + preprocess.img_size from params.yaml, in make_project
SMOKE = {
    "synthetic": {"train": 32, "val": 16, "test": 16},
    "preprocess": {"img_size": 32},
    "data": {"min_val": 4},
    "backbones": ["resnet18"],
    "train": {"epochs": 1, "batch_size": 8},
}
MODULES = (
    "torch",
    "torchvision",
    "cv2",
    "numpy",
    "sklearn",
    "scipy",
    "matplotlib",
    "yaml",
    "PIL",
    "tqdm",
    "pydantic",
    "albumentations",
    "pydicom",
    "pytorch_grad_cam",
    "dvclive",
    "dvc",
)
OPTIONAL = {"dvc"}  # without it the stages run in dvc.yaml's order
# The goals for an H200 (bench/results/gpu.json shows them met or not).
GOALS = {
    "epoch1_over_epoch2": 0.5,
    "real_over_ceiling": 0.95,
    "stage_over_real_tolerance": 0.05,
    "timed_epoch_s": 5.0,
    "total_s": 360.0,
}


# --- dvc.yaml without dvc --------------------------------------------------------------------------


def _lookup(path: str, context: dict):
    value = context
    for key in path.split("."):
        value = value[key]
    return value


def _interpolate(text, context: dict):
    """`${a.b}` from `context`; a string that is one whole `${...}` keeps the value's type."""
    if not isinstance(text, str):
        return text
    whole = re.fullmatch(r"\$\{\s*([\w.-]+)\s*\}", text)
    if whole:
        return _lookup(whole.group(1), context)
    return re.sub(r"\$\{\s*([\w.-]+)\s*\}", lambda m: str(_lookup(m.group(1), context)), text)


def stage_commands(pipeline: dict, params: dict) -> list[tuple[str, str]]:
    """(stage name as DVC names it, cmd) in dvc.yaml's order, with foreach and matrix expanded."""
    out = []
    for name, stage in pipeline["stages"].items():
        if "foreach" in stage:
            items = _interpolate(stage["foreach"], params)
            pairs = items.items() if isinstance(items, dict) else ((item, item) for item in items)
            out += [
                (f"{name}@{key}", _interpolate(stage["do"]["cmd"], {**params, "item": item, "key": key}))
                for key, item in pairs
            ]
        elif "matrix" in stage:
            axes = {axis: _interpolate(values, params) for axis, values in stage["matrix"].items()}
            for combo in product(*axes.values()):
                item = dict(zip(axes, combo))
                out.append(
                    (f"{name}@{'-'.join(map(str, combo))}", _interpolate(stage["cmd"], {**params, "item": item}))
                )
        else:
            out.append((name, _interpolate(stage["cmd"], params)))
    return out


# --- running and logging -----------------------------------------------------------------------------


class Log:
    """Print and append to the log file, line by line, so a killed run still leaves its log."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def run(cmd: list[str], log: Log, cwd: Path, env: dict, timeout: float, marks: list | None = None) -> tuple[int, float]:
    """Run `cmd` with its output in the log; kill its whole process group at `timeout`. (exit code, seconds).
    `marks` receives (seconds since the start, stage) for each "Running stage" line (dvc repro's)."""
    log(f"$ {' '.join(cmd)}   (in {cwd}, up to {timeout:.0f} s)")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    timer = threading.Timer(max(timeout, 1), lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stdout:
            log("  " + line.rstrip())
            if marks is not None and (m := re.match(r"Running stage '([^']+)'", line)):
                marks.append((time.perf_counter() - start, m.group(1)))
        code = proc.wait()
    except BaseException:  # Ctrl-C: the command is in a session of its own, which the terminal's signal misses
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        timer.cancel()
    seconds = round(time.perf_counter() - start, 1)
    log(f"  -> exit {code} after {seconds} s" + (" (killed: out of time)" if code == -signal.SIGKILL else ""))
    return code, seconds


def environment(site: Path | None, shim: Path, pythonpath: list[Path]) -> dict:
    """The stages' environment: the carried packages first, `python` meaning this interpreter."""
    paths = ([str(site)] if site else []) + [str(p) for p in pythonpath]
    return {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
    }


# --- the steps ---------------------------------------------------------------------------------------


def prepare_wheels(folder: Path, site: Path, log: Log) -> dict:
    """Check .whl/ against the pins and unpack it; {} when there is no .whl/ (the machine's own packages)."""
    if not folder.is_dir():
        log(f"wheels: no {folder}/; using this machine's packages")
        return {}
    stray = wheels.not_wheels(folder)
    if stray:
        raise UserError(
            f"{folder}/ holds {', '.join(stray)}, not named as a wheel is (name-version-python-abi-platform.whl); "
            f"remove it, or refill {folder}/ with `make gpu-wheels`"
        )
    left = wheels.missing(folder)
    if left:
        raise UserError(
            f"{folder}/ lacks {', '.join(left)}; run `make gpu-wheels` where pip reaches PyPI "
            f"and carry {folder}/ with the tree"
        )
    start = time.perf_counter()
    try:
        wheels.install(folder, site)
    except subprocess.CalledProcessError as err:
        raise UserError(
            f"installing {folder}/ failed: {(err.stderr or '').strip().splitlines()[-1:]}; "
            "rebuild it with `make gpu-wheels`"
        ) from err
    info = {
        "folder_mib": wheels.size_mb(folder),
        "wheels": len(list(folder.glob("*.whl"))),
        "install_s": round(time.perf_counter() - start, 1),
    }
    log(
        f"wheels: {info['wheels']} from {folder}/ ({info['folder_mib']} MiB) unpacked into {site} in {info['install_s']} s"
    )
    return info


def probe(env: dict) -> tuple[dict, dict]:
    """({module: version, or why it does not import}, the device) as a fresh interpreter with `env` sees them."""
    code = (
        "import importlib, json, os, sys\nout = {}\nfor m in sys.argv[1:]:\n"
        "    try:\n        out[m] = str(getattr(importlib.import_module(m), '__version__', 'ok'))\n"
        "    except Exception as err:\n        out[m] = f'MISSING: {err.__class__.__name__}: {err}'\n"
        "device = {}\nif not out['torch'].startswith('MISSING'):\n    import torch\n    c = torch.cuda.is_available()\n"
        "    device = {'cuda': c, 'name': torch.cuda.get_device_name(0) if c else None, 'bf16': c and "
        "torch.cuda.is_bf16_supported(), 'cuda_version': torch.version.cuda, 'cores': os.cpu_count()}\n"
        "print(json.dumps([out, device]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *MODULES], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise UserError(f"{sys.executable} cannot probe its packages: {proc.stderr.strip().splitlines()[-1:]}")
    modules, device = json.loads(proc.stdout.strip().splitlines()[-1])
    return modules, device


def make_project(dest: Path, smoke: bool) -> dict:
    """Copy the demo project and its code to `dest`, the check's settings written over demo/params.yaml
    (the study's img_size, 2 epochs; tiny in smoke mode); returns the demo's params."""
    study = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = SMOKE if smoke else merge(CHECK, {"preprocess": {"img_size": study["preprocess"]["img_size"]}})
    return copy_project(dest, PROJECT_FILES, {f"{DEMO}/params.yaml": overrides}, ROOT, missing_ok=True)[
        f"{DEMO}/params.yaml"
    ]


def run_pipeline(project: Path, params: dict, runner: str, env: dict, log: Log, deadline: float) -> dict:
    py = sys.executable
    # The copy is no git repository: DVC is told so instead of looking for one.
    steps = (
        [("dvc config", [py, "-m", "dvc", "config", "core.no_scm", "true"]), ("dvc repro", [py, "-m", "dvc", "repro"])]
        if runner == "dvc"
        else [
            (name, ["bash", "-c", cmd])
            for name, cmd in stage_commands(yaml.safe_load((project / "dvc.yaml").read_text()), params)
        ]
    )
    stages, marks = [], []
    for name, cmd in steps:
        code, seconds = run(cmd, log, project, env, deadline - time.time(), marks)
        stages.append({"stage": name, "seconds": seconds, "exit": code})
        if code != 0:
            break
    out = {
        "runner": runner,
        "stages": stages,
        "seconds": round(sum(s["seconds"] for s in stages), 1),
        "ok": all(s["exit"] == 0 for s in stages) and len(stages) == len(steps),
    }
    if marks:
        out["dvc_stages"] = dvc_stage_seconds(marks, stages[-1]["seconds"])
    return out


def dvc_stage_seconds(marks: list[tuple[float, str]], total: float) -> dict:
    """dvc repro: each stage runs from its "Running stage" line to the next one (the last to the end)."""
    ends = [t for t, _ in marks[1:]] + [total]
    return {name: round(end - t, 1) for (t, name), end in zip(marks, ends)}


def outputs(project: Path, backbones: list[str], seed: int, epochs: int) -> dict:
    """What the pipeline should have left, found or not (one seed: the check's)."""

    def epochs_logged(b: str) -> int:
        return len(live_logs.column(project / "dvclive" / run_name(b, seed), "images_per_s"))

    found = {
        "metrics/summary.md": (project / "metrics" / "summary.md").is_file(),
        "metrics/data_report.json": (project / "metrics" / "data_report.json").is_file(),
        **{
            f"models/{run_name(b, seed)}.pt": (project / "models" / f"{run_name(b, seed)}.pt").is_file()
            for b in backbones
        },
        **{f"metrics/{b}.json": (project / "metrics" / f"{b}.json").is_file() for b in backbones},
        **{f"metrics/headline/{b}.json": (project / "metrics" / "headline" / f"{b}.json").is_file() for b in backbones},
        **{f"dvclive/{run_name(b, seed)}: {epochs} epochs": epochs_logged(b) == epochs for b in backbones},
    }
    return found


def stage_seconds(pipeline: dict) -> dict:
    """{stage name: wall seconds}, from dvc repro's output or from running the stages one by one."""
    return pipeline.get("dvc_stages") or {s["stage"]: s["seconds"] for s in pipeline.get("stages", [])}


def table(result: dict, pipeline: dict, seed: int) -> dict:
    """Per backbone: the stages' wall times and the train stage's and the bench's figures side by side."""
    times, out = stage_seconds(pipeline), {}
    for b, r in result.get("backbones", {}).items():
        out[b] = {
            "train_s": times.get(f"train@{b}-{seed}"),
            "evaluate_s": times.get(f"evaluate@{b}-{seed}"),
            "first_batch_s": r.get("first_batch_s"),
            "epoch1_img_s": r.get("epoch1_img_s"),
            "epoch2_img_s": r.get("epoch2_img_s"),
            "real_img_s": r["real_img_s"]["median"],
            "ceiling_img_s": r["ceiling_img_s"]["median"],
            "real_over_ceiling": r["real_over_ceiling"],
            "stage_over_real": r.get("stage_over_real"),
            "bench_epoch_s": r.get("epoch_s"),
            "agreement": (r.get("agreement") or {}).get("agreeing"),
        }
    return out


def goals(result: dict, total_s: float | None = None) -> dict:
    """Pass or fail per goal and backbone (None: not measured, e.g. a single epoch or no model)."""

    def at_least(value, goal):
        return None if value is None else value >= goal

    out = {}
    for b, r in result.get("backbones", {}).items():
        stage = r.get("stage_over_real")
        # both sides of stage/real: the bench's timed epochs and the train stage's last epoch
        stage_epoch_s = result["train_images"] / r["stage_img_s"] if r.get("stage_img_s") else None
        shortest = min((v for v in (r.get("epoch_s"), stage_epoch_s) if v is not None), default=None)
        out[b] = {
            "epoch1_ok": at_least(r.get("epoch1_over_epoch2"), GOALS["epoch1_over_epoch2"]),
            "real_over_ceiling_ok": r["real_over_ceiling"] >= GOALS["real_over_ceiling"],
            "stage_matches_real_ok": None if stage is None else abs(stage - 1) <= GOALS["stage_over_real_tolerance"],
            "timed_long_enough_ok": at_least(shortest, GOALS["timed_epoch_s"]),
            "evaluate_agrees_ok": (r.get("agreement") or {}).get("ok"),
        }
    if total_s is not None:
        out["check"] = {"total_ok": total_s <= GOALS["total_s"]}
    return out


def show_table(rows: dict, verdicts: dict, log: Log) -> None:
    def cell(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    log("backbone        train_s eval_s first_s ep1_img/s ep2_img/s  real  ceiling real/ceil stage/real agree  goals")
    for b, r in rows.items():
        marks = " ".join(
            f"{k.removesuffix('_ok')}:{'-' if v is None else 'yes' if v else 'NO'}"
            for k, v in verdicts.get(b, {}).items()
        )
        log(
            f"{b:15s} {cell(r['train_s']):>7s} {cell(r['evaluate_s']):>6s} {cell(r['first_batch_s'], 2):>7s} "
            f"{cell(r['epoch1_img_s']):>9s} {cell(r['epoch2_img_s']):>9s} {cell(r['real_img_s']):>5s} "
            f"{cell(r['ceiling_img_s']):>8s} {cell(r['real_over_ceiling'], 3):>9s} {cell(r['stage_over_real'], 3):>10s} "
            f"{cell(r['agreement'], 3):>5s}  {marks}"
        )


def prepare_python(args, tmp: Path, log: Log, info: dict) -> tuple[Path | None, Path]:
    """Wheels unpacked, `python` on PATH meaning this interpreter, every module and the device checked.
    (the carried packages' folder or None, the folder of the `python` shim)"""
    site, shim = tmp / "site", tmp / "bin"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would lose a venv
    (shim / "python").chmod(0o755)
    info["wheels"] = prepare_wheels(args.wheels, site, log)
    site = site if info["wheels"] else None
    if site:
        sys.path.insert(0, str(site))  # this process imports the stages' modules too
    info["modules"], info["device"] = probe(environment(site, shim, []))
    log("modules: " + ", ".join(f"{m} {v}" for m, v in info["modules"].items()))
    absent = [m for m, v in info["modules"].items() if v.startswith("MISSING") and m not in OPTIONAL]
    if absent:
        raise UserError(f"cannot import {', '.join(absent)}; carry their wheels in {args.wheels}/ (make gpu-wheels)")
    log(f"device: {info['device']}")
    if not info["device"].get("cuda") and not args.smoke:
        raise UserError("no CUDA device visible to torch; run this on the GPU machine (or --smoke on CPU)")
    return site, shim


def run_bench(project: Path, backbones: list[str], args, env: dict, log: Log, deadline: float) -> dict:
    """bench.gpu on the pipeline's cache and DVCLive logs; {"exit", "seconds"} and, when it ran, its "result"."""
    if not (project / "cache" / "meta.json").is_file():
        return {"exit": None, "seconds": 0, "note": "no cache: the preprocess stage did not finish"}
    out = args.results / "gpu.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.gpu",
        "--cache",
        "cache",
        "--live",
        "dvclive",
        "--models",
        "models",
        "--out",
        str(out),
        "--backbones",
        *backbones,
        "--repeats",
        str(1 if args.smoke else args.repeats),
        *(["--smoke"] if args.smoke else ["--epoch-s", str(args.epoch_s)]),
    ]
    code, seconds = run(cmd, log, project, env, deadline - time.time())
    return {"exit": code, "seconds": seconds, **({"result": json.loads(out.read_text())} if code == 0 else {})}


def check(args, log: Log, info: dict) -> bool:
    """The three steps; fills `info` as it goes (so a refusal still leaves what was found). Passed?"""
    deadline = time.time() + args.budget
    with tempfile.TemporaryDirectory(prefix="cxr4-gpu-check-") as tmp:
        site, shim = prepare_python(args, Path(tmp), log, info)
        params = make_project(Path(tmp) / "project", args.smoke)
        project = Path(tmp) / "project" / DEMO
        env = environment(site, shim, [project.parent])  # the stages run in demo/, their code one level up
        runner = (
            args.runner
            if args.runner != "auto"
            else ("stages" if info["modules"]["dvc"].startswith("MISSING") else "dvc")
        )
        backbones, epochs = params["backbones"], int(params["train"]["epochs"])
        pipeline = info["pipeline"] = run_pipeline(project, params, runner, env, log, deadline - args.bench_reserve)
        pipeline["outputs"] = outputs(project, backbones, params["seeds"][0], epochs)
        log(
            f"pipeline ({runner}): {'ok' if pipeline['ok'] else 'FAILED'} in {pipeline['seconds']} s; "
            f"missing outputs: {[k for k, v in pipeline['outputs'].items() if not v] or 'none'}"
        )
        bench_env = environment(site, shim, [project.parent, ROOT])  # the copy's stages, this checkout's bench
        bench = info["bench"] = run_bench(project, backbones, args, bench_env, log, deadline)
    info["table"] = table(bench.get("result", {}), pipeline, params["seeds"][0])
    return pipeline["ok"] and all(pipeline["outputs"].values()) and bench["exit"] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="where gpu.json and gpu_check.log go"
    )
    parser.add_argument("--wheels", type=Path, default=wheels.FOLDER, help="the carried wheel folder")
    parser.add_argument(
        "--runner",
        choices=("auto", "dvc", "stages"),
        default="auto",
        help="auto: dvc repro when dvc imports, else the stage modules in dvc.yaml's order",
    )
    parser.add_argument(
        "--budget", type=float, default=480, help="seconds for everything (the check must fit 8 minutes)"
    )
    parser.add_argument("--bench-reserve", type=float, default=200, help="seconds of the budget kept for bench.gpu")
    parser.add_argument("--repeats", type=int, default=3, help="bench.gpu's timed epochs per side")
    parser.add_argument("--epoch-s", type=float, default=5.0, help="bench.gpu's timed epochs last at least this long")
    parser.add_argument("--smoke", action="store_true", help="CPU, 32 px, ResNet-18, one epoch: checks this script")
    args = parser.parse_args()
    args.results, args.wheels = args.results.resolve(), args.wheels.resolve()
    os.chdir(ROOT)
    log = Log(args.results / "gpu_check.log")
    start, info, code = time.time(), {"smoke": args.smoke}, 0
    try:
        ok = check(args, log, info)
    except UserError as err:  # a refusal still leaves its JSON and log
        log(f"error: {err}")
        ok, code, info["error"] = False, EXIT_USER_ERROR, str(err)
    except KeyboardInterrupt:  # so does Ctrl-C
        ok, code, info["error"] = False, EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
    except Exception as err:  # and a bug
        log(traceback.format_exc())
        ok, code, info["error"] = False, 1, f"{err.__class__.__name__}: {err}"
    info.update(ok=ok, total_s=round(time.time() - start, 1))
    result = info.get("bench", {}).pop("result", {})
    # Goals are judged on a check that ran through: after a failure, a "yes" would be a verdict on nothing.
    info["goals"] = goals(result, None if args.smoke else info["total_s"]) if ok else {}
    if info.get("table"):
        show_table(info["table"], info["goals"], log)
    if "check" in info["goals"]:
        log(
            f"goal: the whole check in <= {GOALS['total_s']:.0f} s: {'yes' if info['goals']['check']['total_ok'] else 'NO'}"
        )
    write_json(args.results / "gpu.json", {**result, "check": info})
    if code == EXIT_INTERRUPTED:
        log(f"interrupted: what the check found so far is in {args.results / 'gpu.json'} and gpu_check.log beside it")
    else:
        log(f"gpu check {'passed' if ok else 'FAILED'} in {info['total_s']} s -> {args.results / 'gpu.json'}")
    sys.exit(code or (0 if ok else 1))


if __name__ == "__main__":
    main()
