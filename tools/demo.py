"""`make demo`: synthetic data -> the whole pipeline at CPU size -> the summary on screen.

The demo's overrides (params.demo.yaml) are merged into params.yaml for the run and the study's
params.yaml is put back afterwards, even when the run fails. dvc.lock then records the demo's
params, so a later `dvc repro` with the study's params rightly reruns everything.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.lib.cache import SYNTHETIC_MARKER
from stages.lib.synthetic import make_dataset

DATA = Path("data")
PARAMS = Path("params.yaml")
BACKUP = Path("params.yaml.study")  # survives a killed demo; restored at the next start
DEMO_SIZES = {"train": 360, "val": 90, "test": 90}


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    if BACKUP.exists():  # an earlier demo was killed before it could restore params.yaml
        shutil.move(BACKUP, PARAMS)
    if DATA.exists() and not (DATA / SYNTHETIC_MARKER).exists():
        print(f"error: {DATA}/ holds your own data; make demo would train on it with toy settings. "
              f"Run `dvc repro` for your data, or move it away to see the demo.", file=sys.stderr)
        return 2
    if not DATA.exists():
        print("Generating the synthetic demo dataset (not real X-rays) ...", flush=True)
        make_dataset(DATA, DEMO_SIZES, seed=0)
    run("dvc", "add", "--quiet", str(DATA))

    shutil.copy2(PARAMS, BACKUP)
    try:
        params = merge(yaml.safe_load(PARAMS.read_text()), yaml.safe_load(Path("params.demo.yaml").read_text()))
        PARAMS.write_text(yaml.safe_dump(params, sort_keys=False))
        run("dvc", "repro")
    except subprocess.CalledProcessError as err:
        return err.returncode
    finally:
        shutil.move(BACKUP, PARAMS)

    print("\n" + Path("metrics/summary.md").read_text())
    print("Metrics: metrics/<backbone>.json   Plots: plots/*.png, or `dvc plots show` for the interactive page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
