"""How the preprocess stage grows with the number of images: the measured road to 100k.

    python -m bench.scale [--sizes 1000 4000 16000] [--work DIR]   -> bench/results/scale.json
    python -m bench.scale --smoke --out X.json                      # tiny N: checks the script

Films: the demo generator's synthetic chest films (700-1500 px a side, PNG and JPEG, gray and
RGB), split 100:15:15 like the target (100k train, 15k val, 15k test). They are made once for the
largest N in --work (kept for the next run: ~220 KB a film) and a smaller N takes the first rows
of each split's CSV. Each N runs the preprocess stage's own `build_cache` (params' preprocess and
data sections, the given val split kept, leaks only warned about) in a fresh process that records:
  parts_s      decode_clahe, hashing: seconds summed over the worker processes (core-seconds);
               layout, leakage, shortcut, write_cache, report: wall seconds in the stage's process,
               other: the rest of the wall time outside the decoding phase
  wall_s       the whole build; img_s_per_core = n / (wall_s * workers)
  peak_rss_mb  the stage process's peak resident set (VmHWM), beside the peaks of its anonymous
               and file-backed parts (sampled every 10 ms); worker_peak_rss_mb: each worker's own
               peak (VmHWM), summed, which counts the pages a forked worker shares with the stage
               once per process; peak_pss_mb: the peak of the stage's and its workers' summed PSS
               (a shared page divided among them): the memory they hold at once
  repeats      each N is run that many times (3, as every benchmark): times are medians, memory maxima
  cache_mb     the cache on disk
`growth` gives per part the exponent b of t ~ n^b between the two largest N and the part at 130k
images extrapolated with max(b, 1) (linearly for a part under 50 ms); `extrapolated_100k_s` adds
them up for 16 cores: the per-image parts divided by 16 workers, the others undivided (they run in
one process). It assumes the decoding phase stays bound by the workers, not by the parent's write.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from stages.lib.core.errors import UserError, cli

TARGET = {"train": 100_000, "val": 15_000, "test": 15_000}
TARGET_CORES = 16
PER_IMAGE = ("decode_clahe", "hashing")  # run in the worker processes: they divide by the cores
SERIAL = ("layout", "leakage", "shortcut", "write_cache", "report", "other")  # in the stage's process
SPLITS = tuple(TARGET)
NOISE_S = 0.05


def split_sizes(n: int) -> dict[str, int]:
    total = sum(TARGET.values())
    train, val = round(n * TARGET["train"] / total), round(n * TARGET["val"] / total)
    return {"train": train, "val": val, "test": n - train - val}


# --- the films ---------------------------------------------------------------------------------------


def films(work: Path, n_max: int) -> Path:
    """A course-layout folder of at least `n_max` synthetic films (made once, then reused)."""
    from stages.lib.data.synthetic import make_dataset

    folder, marker = work / "films", work / "films" / "SCALE.json"
    sizes = split_sizes(n_max)
    if marker.is_file() and all(json.loads(marker.read_text())[s] >= sizes[s] for s in SPLITS):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {n_max} synthetic films in {folder} ...", flush=True)
    make_dataset(folder, sizes, seed=0)
    (folder / "full").mkdir()
    for split in SPLITS:
        (folder / f"{split}_data.csv").rename(folder / "full" / f"{split}_data.csv")
    marker.write_text(json.dumps(sizes))
    return folder


def select(folder: Path, n: int) -> dict[str, int]:
    """Point the course CSVs at the first rows of each split for `n` images."""
    sizes = split_sizes(n)
    for split, k in sizes.items():
        with open(folder / "full" / f"{split}_data.csv", newline="") as f:
            rows = list(csv.reader(f))[: k + 1]
        with open(folder / f"{split}_data.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
    return sizes


# --- one N, in its own process ---------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Every `interval` s: peaks of this process's resident set, anonymous and file-backed; each worker
    process's own peak RSS (its VmHWM, kept by the kernel, read until it exits); and the peaks of
    the workers' summed PSS and of this process's plus theirs (PSS shares a page among the processes
    that map it, so the sum is what the stage holds at once)."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")

    # PSS comes from smaps_rollup, which walks each process's page tables under its memory lock:
    # read every 10 ms it slowed the stage by 23% (59.7 against 73.6 img/s per core, 2000 films,
    # 3 interleaved runs each); every 0.5 s it is inside the runs' noise. VmHWM needs no sampling.
    PSS_EVERY = 50

    def __init__(self, interval: float = 0.01):
        super().__init__(daemon=True)
        self.interval, self.peaks, self.done = interval, dict.fromkeys(self.FIELDS, 0), threading.Event()
        self.worker_hwm: dict[int, int] = {}  # pid -> its VmHWM in kB
        self.workers_pss = self.total_pss = 0

    def run(self) -> None:
        tick = 0
        while not self.done.wait(self.interval):
            self.sample(pss=tick % self.PSS_EVERY == 0)
            tick += 1

    def sample(self, pss: bool = True) -> None:
        for field, kb in status(self.FIELDS).items():
            self.peaks[field] = max(self.peaks[field], kb)
        workers_pss, pids = 0, children()
        pss = pss or any(pid not in self.worker_hwm for pid in pids)  # a new worker is read at once
        for pid in pids:
            hwm = status(["VmHWM"], pid).get("VmHWM")
            if hwm is None:  # it exited between the listing and the read
                continue
            self.worker_hwm[pid] = max(self.worker_hwm.get(pid, 0), hwm)
            workers_pss += (pss_kb(pid) or 0) if pss else 0
        if pss:
            self.workers_pss = max(self.workers_pss, workers_pss)
            self.total_pss = max(self.total_pss, workers_pss + (pss_kb("self") or 0))


def status(fields, pid="self") -> dict[str, int]:
    """kB values of /proc/<pid>/status lines ({} when the process is gone)."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[key] = int(value.split()[0])
    return out


def pss_kb(pid) -> int | None:
    """Proportional set size of a process from /proc/<pid>/smaps_rollup; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def children() -> list[int]:
    """The preprocess workers: the processes multiprocessing started for this one (the pool's), not
    the git that provenance runs. A forked git child carries this process's command line until it
    execs, so matching command lines counted it on a loaded machine (3 workers seen for 2)."""
    import multiprocessing.process as mp_process

    return [p.pid for p in list(mp_process._children) if p.pid is not None]


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def measure(data: Path, work: Path, workers: int, params: dict) -> dict:
    """Run the preprocess stage's build_cache on `data`; its parts, wall time, memory and cache size.

    Called in a fresh process that imports what the stage imports (not bench.common), so its
    memory is the stage's."""
    from stages.lib.data.cache_writer import seconds
    from stages.lib.params.schema import Data, Preprocess
    from stages.preprocess import build_cache

    baseline = status(["VmRSS"])["VmRSS"]
    sampler = RssSampler()
    sampler.start()
    seconds.clear()
    start = time.perf_counter()
    report = build_cache(
        data,
        work / "cache",
        work / "data_report.json",
        Preprocess(**params["preprocess"]),
        Data(**params["data"]),
        workers=workers,
    )
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    sampler.sample()  # the pool has shut down: its workers' last peaks were read while they ran
    n = sum(sum(c.values()) for c in report["counts"].values())
    kb = 1 / 1024
    parts = {k: round(seconds[k], 3) for k in (*PER_IMAGE, *SERIAL[:-1])}
    parts["other"] = round(max(0.0, wall - seconds["decode_wall"] - sum(parts[k] for k in SERIAL[:-1])), 3)
    return {
        "n": n,
        "workers": workers,
        "wall_s": round(wall, 2),
        "img_s_per_core": round(n / (wall * workers), 2),
        "parts_s": parts,
        "decode_wall_s": round(seconds["decode_wall"], 3),
        "peak_rss_mb": round(status(["VmHWM"])["VmHWM"] * kb, 1),
        "rss_after_imports_mb": round(baseline * kb, 1),
        "peak_rss_anon_mb": round(sampler.peaks["RssAnon"] * kb, 1),
        "peak_rss_file_mb": round((sampler.peaks["RssFile"] + sampler.peaks["RssShmem"]) * kb, 1),
        # each worker's own peak, summed (RUSAGE_CHILDREN took the git child's, which inherits the parent's)
        "worker_peak_rss_mb": round(sum(sampler.worker_hwm.values()) * kb, 1),
        "workers_seen": len(sampler.worker_hwm),
        "workers_peak_pss_mb": round(sampler.workers_pss * kb, 1),
        "peak_pss_mb": round(sampler.total_pss * kb, 1),  # the stage's process and its workers together
        "cache_mb": folder_mb(work / "cache"),
        "near_duplicate_pairs": sum(len(p["near_duplicates"]) for p in report["leakage"]["pairs"].values()),
    }


def combine_repeats(runs: list[dict]) -> dict:
    """One row from `repeats` runs of one N: each time (and part) its median over the runs, each
    memory figure its largest, the wall times of every run beside them."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and key not in ("n", "workers", "near_duplicate_pairs"):
            values = [r[key] for r in runs]
            row[key] = (
                max(values) if key.endswith("_mb") or key == "workers_seen" else round(statistics.median(values), 3)
            )
    row["parts_s"] = {k: round(statistics.median(r["parts_s"][k] for r in runs), 3) for k in runs[0]["parts_s"]}
    row["img_s_per_core"] = round(row["n"] / (row["wall_s"] * row["workers"]), 2)
    return {**row, "repeats": len(runs), "wall_s_runs": [r["wall_s"] for r in runs]}


def measure_in_child(data: Path, work: Path, workers: int, params: dict) -> dict:
    child = ["--child", str(data), "--work", str(work), "--workers", str(workers), "--params", json.dumps(params)]
    proc = subprocess.run([sys.executable, "-m", "bench.scale", *child], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"the preprocess run on {data} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- growth ------------------------------------------------------------------------------------------


def growth(sizes: list[dict]) -> dict:
    """Per part: exponent b of t ~ n^b between the two largest N, and the part at the target's size
    extrapolated with max(b, 1). A part under NOISE_S at the largest N is extrapolated linearly:
    its exponent is the timer's noise."""
    target = sum(TARGET.values())
    small, large = sorted(sizes, key=lambda r: r["n"])[-2:]
    out = {}
    for part in (*PER_IMAGE, *SERIAL):
        t0, t1 = small["parts_s"][part], large["parts_s"][part]
        b = (
            math.log(t1 / t0) / math.log(large["n"] / small["n"])
            if min(t0, t1) > 0 and large["n"] > small["n"]
            else None
        )
        # rounded before use, so that the JSON's exponent reproduces its own extrapolation
        used = round(1.0 if b is None or t1 < NOISE_S else max(b, 1.0), 2)
        out[part] = {
            "exponent": None if b is None else round(b, 2),
            "exponent_used": used,
            "at_130k_s": round(t1 * (target / large["n"]) ** used, 1),
        }
    return out


def extrapolate(g: dict) -> float:
    """The stage's wall seconds at 100k + 15k + 15k on TARGET_CORES cores."""
    return round(sum(g[p]["at_130k_s"] for p in PER_IMAGE) / TARGET_CORES + sum(g[p]["at_130k_s"] for p in SERIAL), 1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="numbers of images N")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/cxr4-scale"), help="films and caches (films kept for reuse)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="preprocess worker processes")
    parser.add_argument("--smoke", action="store_true", help="N of 30 and 60 in a temporary folder: checks the script")
    parser.add_argument("--repeats", type=int, default=None, help="runs per N (default 3; 2 with --smoke)")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/scale.json)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)  # one N, in a fresh process
    parser.add_argument("--params", type=json.loads, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def measure_sizes(folder: Path, work: Path, sizes: list[int], repeats: int, workers: int, params: dict) -> list[dict]:
    """One row per N (combine_repeats of `repeats` runs, each in a fresh process on a fresh cache)."""
    rows = []
    for n in sizes:
        select(folder, n)
        runs = []
        for _ in range(repeats):
            shutil.rmtree(work / "cache", ignore_errors=True)
            runs.append(measure_in_child(folder, work, workers, params))
        rows.append(combine_repeats(runs))
        r = rows[-1]
        print(
            f"n {r['n']:6d}: {r['wall_s']:7.1f} s, {r['img_s_per_core']:6.1f} img/s/core, peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(anon {r['peak_rss_anon_mb']:.0f}, file {r['peak_rss_file_mb']:.0f}), workers' peaks summed "
            f"{r['worker_peak_rss_mb']:.0f} MB, PSS with workers {r['peak_pss_mb']:.0f} MB, cache {r['cache_mb']:.0f} MB, "
            f"parts {r['parts_s']}",
            flush=True,
        )
    shutil.rmtree(work / "cache", ignore_errors=True)
    return rows


def findings(rows: list[dict]) -> dict:
    """The rows with how each part grows, the stage extrapolated to the target, and the spreads and peaks."""
    g, rates = growth(rows), [r["img_s_per_core"] for r in rows]
    return {
        "sizes": rows,
        "growth": g,
        "extrapolated_100k_s": extrapolate(g),
        "target": {**TARGET, "cores": TARGET_CORES},
        "throughput_spread": round(max(rates) / min(rates) - 1, 3),
        "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "max_peak_pss_mb": max(r["peak_pss_mb"] for r in rows),
        "films": "SYNTHETIC (stages/lib/data/synthetic.py): 700-1500 px, PNG and JPEG, gray and RGB",
    }


@cli
def main() -> None:
    args = parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.work, args.workers, args.params)))
        return
    from bench import common  # not in the child: it would add its imports to the stage's memory

    # The given val split is kept (as it is from about 200 images on); leaks are reported, not refused.
    s = common.settings().with_data(layout="course", min_val=1, on_leak="warn", on_bad_image="error")
    params = {"preprocess": s.preprocess.model_dump(), "data": s.data.model_dump()}  # JSON for the child process
    if len(args.sizes) < 2 and not args.smoke:
        raise UserError("--sizes: give at least two N to fit how each part grows")
    repeats = args.repeats or (2 if args.smoke else common.MIN_REPEATS)
    common.check_repeats(repeats, args.smoke)
    start = time.perf_counter()
    with common.tempdir() as tmp:
        work = Path(tmp) if args.smoke else args.work
        sizes = [30, 60] if args.smoke else sorted(args.sizes)
        rows = measure_sizes(films(work, max(sizes)), work, sizes, repeats, args.workers, params)
    result = {
        **findings(rows),
        "smoke": args.smoke,
        "img_size": s.img_size,
        "elapsed_s": round(time.perf_counter() - start, 1),
        **common.stamp(repeats),
    }
    path = common.save("scale", result, args.out)
    print(
        f"growth {result['growth']}\nextrapolated to 100k + 15k + 15k on {TARGET_CORES} cores: {result['extrapolated_100k_s']} s -> {path}"
    )


if __name__ == "__main__":
    main()
