"""`make gpu-check`: prove the GPU path in one command on a fresh CUDA machine with no registry.

    python3 -m bench.gpu_check [--results DIR]   # on the GPU machine, .whl/ carried (make gpu-wheels)
    python -m bench.gpu_check --smoke --results DIR   # CPU, tiny: checks this script (the test suite)

1. wheels: .whl/ holds one wheel per pin of bench/gpu_wheels.txt; they are unpacked into a private
   folder put first on PYTHONPATH, and every module the pipeline imports must load (checked first;
   without .whl/ the machine's own packages must do).
2. pipeline: a temporary copy of the demo project (demo/: its synthetic films, from scratch) at the
   study's size (params.yaml's 256 px), 2 epochs, the precision params ask for (bf16 autocast on a
   GPU that has it), channels_last and DataLoader workers, run end to end through `dvc repro`, or,
   where dvc does not import, through its stages in the order its dvc.yaml gives (`stage_commands`).
3. bench.gpu on that pipeline's cache for every backbone, beside its DVCLive img/s.
Writes DIR/gpu.json (bench.gpu's figures plus a `check` section: wheels, versions, stage times,
goals) and DIR/gpu_check.log, both also when a step fails or the time budget runs out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

from bench import wheels
from stages.lib.errors import UserError
from stages.lib.io import write_json

ROOT = Path(__file__).resolve().parents[1]
# The demo project (demo/: its generated dvc.yaml and params) with the code it runs.
PROJECT_FILES = ("stages", "tools", "dvc.yaml", "params.yaml", ".dvc/plots", "demo/dvc.yaml", "demo/params.yaml",
                 "demo/.dvc/config", "demo/.dvcignore", "demo/.gitignore")
DEMO = "demo"
# Over demo/params.yaml (from scratch, lr 1e-3, its synthetic films): the study's image size, 2 epochs.
CHECK = {"train": {"epochs": 2}}  # + preprocess.img_size from params.yaml, in make_project
SMOKE = {"synthetic": {"train": 32, "val": 16, "test": 16}, "preprocess": {"img_size": 32}, "data": {"min_val": 4},
         "backbones": ["resnet18"], "train": {"epochs": 1, "batch_size": 8}}
MODULES = ("torch", "torchvision", "cv2", "numpy", "sklearn", "scipy", "matplotlib", "yaml", "PIL", "tqdm",
           "pydantic", "albumentations", "pydicom", "pytorch_grad_cam", "dvclive", "dvc")
OPTIONAL = {"dvc"}  # without it the stages run in dvc.yaml's order
GOALS = {"real_over_ceiling": 0.95, "stage_over_real_tolerance": 0.05}


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
            out += [(f"{name}@{key}", _interpolate(stage["do"]["cmd"], {**params, "item": item, "key": key}))
                    for key, item in pairs]
        elif "matrix" in stage:
            axes = {axis: _interpolate(values, params) for axis, values in stage["matrix"].items()}
            for combo in product(*axes.values()):
                item = dict(zip(axes, combo))
                out.append((f"{name}@{'-'.join(map(str, combo))}", _interpolate(stage["cmd"], {**params, "item": item})))
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


def run(cmd: list[str], log: Log, cwd: Path, env: dict, timeout: float) -> tuple[int, float]:
    """Run `cmd` with its output in the log; kill its whole process group at `timeout`. (exit code, seconds)."""
    log(f"$ {' '.join(cmd)}   (in {cwd}, up to {timeout:.0f} s)")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timer = threading.Timer(max(timeout, 1), lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stdout:
            log("  " + line.rstrip())
        code = proc.wait()
    finally:
        timer.cancel()
    seconds = round(time.perf_counter() - start, 1)
    log(f"  -> exit {code} after {seconds} s" + (" (killed: out of time)" if code == -signal.SIGKILL else ""))
    return code, seconds


def environment(site: Path | None, shim: Path, pythonpath: list[Path]) -> dict:
    """The stages' environment: the carried packages first, `python` meaning this interpreter."""
    paths = ([str(site)] if site else []) + [str(p) for p in pythonpath]
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONUNBUFFERED": "1"}


# --- the steps ---------------------------------------------------------------------------------------

def prepare_wheels(folder: Path, site: Path, log: Log) -> dict:
    """Check .whl/ against the pins and unpack it; {} when there is no .whl/ (the machine's own packages)."""
    if not folder.is_dir():
        log(f"wheels: no {folder}/; using this machine's packages")
        return {}
    left = wheels.missing(folder)
    if left:
        raise UserError(f"{folder}/ lacks {', '.join(left)}; run `make gpu-wheels` where pip reaches PyPI "
                        f"and carry {folder}/ with the tree")
    start = time.perf_counter()
    try:
        wheels.install(folder, site)
    except subprocess.CalledProcessError as err:
        raise UserError(f"installing {folder}/ failed: {(err.stderr or '').strip().splitlines()[-1:]}; "
                        "rebuild it with `make gpu-wheels`") from err
    info = {"folder_mib": wheels.size_mb(folder), "wheels": len(list(folder.glob('*.whl'))),
            "install_s": round(time.perf_counter() - start, 1)}
    log(f"wheels: {info['wheels']} from {folder}/ ({info['folder_mib']} MiB) unpacked into {site} in {info['install_s']} s")
    return info


def probe(env: dict) -> tuple[dict, dict]:
    """({module: version, or why it does not import}, the device) as a fresh interpreter with `env` sees them."""
    code = ("import importlib, json, os, sys\nout = {}\nfor m in sys.argv[1:]:\n"
            "    try:\n        out[m] = str(getattr(importlib.import_module(m), '__version__', 'ok'))\n"
            "    except Exception as err:\n        out[m] = f'MISSING: {err.__class__.__name__}: {err}'\n"
            "device = {}\nif not out['torch'].startswith('MISSING'):\n    import torch\n    c = torch.cuda.is_available()\n"
            "    device = {'cuda': c, 'name': torch.cuda.get_device_name(0) if c else None, 'bf16': c and "
            "torch.cuda.is_bf16_supported(), 'cuda_version': torch.version.cuda, 'cores': os.cpu_count()}\n"
            "print(json.dumps([out, device]))")
    proc = subprocess.run([sys.executable, "-c", code, *MODULES], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise UserError(f"{sys.executable} cannot probe its packages: {proc.stderr.strip().splitlines()[-1:]}")
    modules, device = json.loads(proc.stdout.strip().splitlines()[-1])
    return modules, device


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(dest: Path, smoke: bool) -> dict:
    """Copy the demo project and its code to `dest`, the check's settings written over demo/params.yaml
    (the study's img_size, 2 epochs; tiny in smoke mode); returns the demo's params."""
    for name in PROJECT_FILES:
        src, to = ROOT / name, dest / name
        to.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, to)
    study = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = SMOKE if smoke else merge(CHECK, {"preprocess": {"img_size": study["preprocess"]["img_size"]}})
    params = merge(yaml.safe_load((ROOT / DEMO / "params.yaml").read_text()), overrides)
    (dest / DEMO / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run_pipeline(project: Path, params: dict, runner: str, env: dict, log: Log, deadline: float) -> dict:
    py = sys.executable
    # The copy is no git repository: DVC is told so instead of looking for one.
    steps = ([("dvc config", [py, "-m", "dvc", "config", "core.no_scm", "true"]), ("dvc repro", [py, "-m", "dvc", "repro"])]
             if runner == "dvc" else
             [(name, ["bash", "-c", cmd]) for name, cmd in stage_commands(yaml.safe_load((project / "dvc.yaml").read_text()), params)])
    stages = []
    for name, cmd in steps:
        code, seconds = run(cmd, log, project, env, deadline - time.time())
        stages.append({"stage": name, "seconds": seconds, "exit": code})
        if code != 0:
            break
    return {"runner": runner, "stages": stages, "seconds": round(sum(s["seconds"] for s in stages), 1),
            "ok": all(s["exit"] == 0 for s in stages) and len(stages) == len(steps)}


def outputs(project: Path, backbones: list[str], seed: int, epochs: int) -> dict:
    """What the pipeline should have left, found or not (one seed: the check's)."""
    def epochs_logged(b: str) -> int:
        tsv = project / "dvclive" / b / f"seed{seed}" / "plots" / "metrics" / "train" / "images_per_s.tsv"
        return len(tsv.read_text().splitlines()) - 1 if tsv.is_file() else 0

    found = {"metrics/summary.md": (project / "metrics" / "summary.md").is_file(),
             "metrics/data_report.json": (project / "metrics" / "data_report.json").is_file(),
             **{f"models/{b}/seed{seed}.pt": (project / "models" / b / f"seed{seed}.pt").is_file() for b in backbones},
             **{f"metrics/{b}.json": (project / "metrics" / f"{b}.json").is_file() for b in backbones},
             **{f"metrics/headline/{b}.json": (project / "metrics" / "headline" / f"{b}.json").is_file() for b in backbones},
             **{f"dvclive/{b}/seed{seed}: {epochs} epochs": epochs_logged(b) == epochs for b in backbones}}
    return found


def goals(result: dict) -> dict:
    out = {}
    for b, r in result.get("backbones", {}).items():
        out[b] = {"real_over_ceiling_ok": r["real_over_ceiling"] >= GOALS["real_over_ceiling"]}
        if "stage_over_real" in r:
            out[b]["stage_matches_real_ok"] = abs(r["stage_over_real"] - 1) <= GOALS["stage_over_real_tolerance"]
    return out


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
    cmd = [sys.executable, "-m", "bench.gpu", "--cache", "cache", "--live", "dvclive", "--out", str(out),
           "--backbones", *backbones, "--repeats", str(1 if args.smoke else args.repeats), *(["--smoke"] if args.smoke else [])]
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
        runner = args.runner if args.runner != "auto" else ("stages" if info["modules"]["dvc"].startswith("MISSING") else "dvc")
        backbones, epochs = params["backbones"], int(params["train"]["epochs"])
        pipeline = info["pipeline"] = run_pipeline(project, params, runner, env, log, deadline - args.bench_reserve)
        pipeline["outputs"] = outputs(project, backbones, params["seeds"][0], epochs)
        log(f"pipeline ({runner}): {'ok' if pipeline['ok'] else 'FAILED'} in {pipeline['seconds']} s; "
            f"missing outputs: {[k for k, v in pipeline['outputs'].items() if not v] or 'none'}")
        bench_env = environment(site, shim, [project.parent, ROOT])  # the copy's stages, this checkout's bench
        bench = info["bench"] = run_bench(project, backbones, args, bench_env, log, deadline)
    info["goals"] = goals(bench.get("result", {}))
    return pipeline["ok"] and all(pipeline["outputs"].values()) and bench["exit"] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("bench/results"), help="where gpu.json and gpu_check.log go")
    parser.add_argument("--wheels", type=Path, default=wheels.FOLDER, help="the carried wheel folder")
    parser.add_argument("--runner", choices=("auto", "dvc", "stages"), default="auto",
                        help="auto: dvc repro when dvc imports, else the stage modules in dvc.yaml's order")
    parser.add_argument("--budget", type=float, default=480, help="seconds for everything (the check must fit 8 minutes)")
    parser.add_argument("--bench-reserve", type=float, default=150, help="seconds of the budget kept for bench.gpu")
    parser.add_argument("--repeats", type=int, default=5, help="bench.gpu's timed epochs per side")
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
        ok, code, info["error"] = False, 2, str(err)
    except Exception as err:  # so does a bug
        log(traceback.format_exc())
        ok, code, info["error"] = False, 1, f"{err.__class__.__name__}: {err}"
    info.update(ok=ok, total_s=round(time.time() - start, 1))
    write_json(args.results / "gpu.json", {**info.get("bench", {}).pop("result", {}), "check": info})
    for b, g in info.get("goals", {}).items():
        log(f"goal {b}: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in g.items()))
    log(f"gpu check {'passed' if ok else 'FAILED'} in {info['total_s']} s -> {args.results / 'gpu.json'}")
    sys.exit(code or (0 if ok else 1))


if __name__ == "__main__":
    main()
