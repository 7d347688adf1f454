"""`make demo` from a clean demo/, timed: its wall time, the machine's load meanwhile, and the scores it
ended with, added to bench/results/demo.json (README's demo times and cross-machine figures come from it).

    python -m bench.demo [--out bench/results/demo.json]

It runs `make clean-demo` and then `make demo` in this checkout, as a user would: demo/ ends as a fresh
run. The file keeps every run, this machine's and others' (a run elsewhere is added by whoever made it,
with its `source`): the spread of the scores across machines is read from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from bench.common import RESULTS, save, stamp

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("resnet18", "ensemble")  # the test macro-F1s recorded from each run


def timed_demo(sample_s: float = 10.0) -> dict:
    """Wall time of `make clean-demo && make demo`, with the 1-minute load average sampled meanwhile."""
    loads, done = [os.getloadavg()[0]], threading.Event()

    def sample():
        while not done.wait(sample_s):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    subprocess.run(["make", "clean-demo"], cwd=ROOT, check=True)
    start = time.monotonic()
    subprocess.run(["make", "demo"], cwd=ROOT, check=True)
    wall = time.monotonic() - start
    done.set()
    return {"wall_s": round(wall, 1), "load_mean": round(sum(loads) / len(loads), 2), "load_max": max(loads)}


def scores(demo: Path = ROOT / "demo") -> dict:
    """Test macro-F1 of each model in SCORES, from the run's headline files."""
    return {
        f"{name}_test_macro_f1": json.loads((demo / "metrics" / "headline" / f"{name}.json").read_text())["test"][
            "macro_f1"
        ]
        for name in SCORES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / "demo.json")
    args = parser.parse_args()
    before = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    run = {**timed_demo(), **scores(), **stamp(), "source": "python -m bench.demo"}
    path = save("demo", {**before, "runs": [*before["runs"], run]}, args.out)
    print(f"-> {path}: {run['wall_s']:.0f} s at load {run['load_mean']}")


if __name__ == "__main__":
    main()
