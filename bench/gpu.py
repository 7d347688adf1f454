"""Training images/s per backbone on a GPU: does the GPU ever wait for data, or for Python?

    python -m bench.gpu [--cache DIR] [--live DIR] [--models DIR]   # on a CUDA machine -> bench/results/gpu.json
    python -m bench.gpu --smoke --out X.json                          # CPU, tiny images: checks the script

For each backbone the train stage's own epoch function (`train_one_epoch`: to_model_input ->
autocast forward -> backward -> fused AdamW, reading the device once per pass) runs, set up as
`fit` sets it up (params' precision, channels_last and cudnn.benchmark on CUDA, class-weighted
loss, the stage's `make_loaders`: sampler, workers, pinned memory, one batch shape), fed two ways:
  real     the train stage's loader over the preprocess cache
  ceiling  one batch already on the device, as many times as the loader has batches
`real_over_ceiling` near 1 means the GPU never waits for data. Both are img/s as the train stage
logs them (images / the function's own epoch time), median of `--repeats` timed epochs after two
warm-up passes, taken in turn. A timed epoch is as many passes of the train loader as make it last
`--epoch-s` seconds (so 5% is not noise); each pass waits for its first batch as the stage's epochs
do. `first_batch_ms` is that wait (median), `loader_img_s` the loader alone.
The study's batch (params' train.batch_size) is measured in full; `--batch-sizes` (64 and 256) add
real and ceiling at larger batches under `batch_sizes`, to show what the small batch leaves unused.
With `--live`, each backbone's train stage DVCLive log is set beside `real`: its epoch-1 and
epoch-2 img/s, time to its first batch, and `stage_over_real` (its last epoch over `real`).
With `--models`, each backbone's trained model scores the cache's val and test films in fp32 and in
the train precision, judged by stages.lib.model.runtime (`agreement`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench import common
from stages.lib.core import live_logs
from stages.lib.core.backbones import BACKBONES
from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import read_json
from stages.lib.core.names import run_name
from stages.lib.model.inference import load_model, predict_split
from stages.lib.model.runtime import agreement, pick_device, precision, seed_everything
from stages.lib.model.training import train_one_epoch

SMOKE_SIZES = {"train": 12, "val": 4, "test": 4}
OTHER_BATCH_SIZES = (64, 256)


class Watched:
    """A loader that notes, per pass, how long the first batch took to arrive."""

    def __init__(self, loader):
        self.loader, self.first_s = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = time.perf_counter()
        batches = iter(self.loader)
        first = next(batches)
        self.first_s.append(time.perf_counter() - start)
        yield first
        yield from batches


class Passes:
    """`passes` passes of `loader` as one epoch."""

    def __init__(self, loader, passes: int):
        self.loader, self.passes = loader, passes

    def __len__(self) -> int:
        return len(self.loader) * self.passes

    def __iter__(self):
        for _ in range(self.passes):
            yield from self.loader


def bench_backbone(
    backbone: str, s: common.Settings, cache: Path, device: torch.device, repeats: int, epoch_s: float
) -> dict:
    train_loader, _ = s.loaders(cache, device)
    net, criterion, optimizer, scaler, autocast = common.training_parts(
        s, backbone, train_loader.dataset.labels, device
    )
    x, y = next(iter(train_loader))
    watched = Watched(train_loader)

    def epoch(batches):
        return lambda: train_one_epoch(net, batches, criterion, optimizer, scaler, device, autocast, desc=backbone)

    epoch(watched)()  # warm-up: workers started, the batch shape tuned
    warm = epoch(watched)()
    passes = max(1, math.ceil(epoch_s / warm.seconds))
    resident = [(x.to(device), y.to(device))] * len(train_loader) * passes
    watched.first_s.clear()
    runs = common.interleaved({"real": epoch(Passes(watched, passes)), "ceiling": epoch(resident)}, repeats, warmup=0)
    real = common.spread([r.n / r.seconds for _, r in runs["real"]], 1)
    ceiling = common.spread([r.n / r.seconds for _, r in runs["ceiling"]], 1)
    loader_s = [common.timed(lambda: list(train_loader))[0] for _ in range(repeats)]
    return {
        "real_img_s": real,
        "ceiling_img_s": ceiling,
        "real_over_ceiling": round(real["median"] / ceiling["median"], 3),
        "first_batch_ms": round(1000 * float(np.median(watched.first_s)), 1),
        "loader_img_s": common.spread([len(train_loader.dataset) / t for t in loader_s], 1),
        "images_per_epoch": runs["real"][0][1].n,
        "epoch_s": round(min(t for t, _ in runs["real"]), 2),
    }


def stage_log(live: Path, backbone: str, seed: int) -> dict:
    """The train stage's own per-epoch figures from its DVCLive log ({} without one)."""
    run = live / run_name(backbone, seed)
    img_s, first = live_logs.column(run, "images_per_s"), live_logs.column(run, "first_batch_s")
    if not img_s:
        return {}
    out = {"stage_img_s": round(img_s[-1], 1), "epoch1_img_s": round(img_s[0], 1)}
    if len(img_s) > 1:
        out.update(epoch2_img_s=round(img_s[1], 1), epoch1_over_epoch2=round(img_s[0] / img_s[1], 3))
    if first:
        out["first_batch_s"] = round(first[0], 2)
    return out


def precision_agreement(
    model_path: Path, backbone: str, cache: Path, s: common.Settings, device: torch.device, autocast
) -> dict:
    """fp32 against the train precision (evaluate's) on the cache's val and test films."""
    model, _ = load_model(model_path, backbone)
    model.to(device)
    batch = s.train.batch_size if device.type == "cuda" else 8

    def probs(ctx) -> np.ndarray:
        return np.concatenate(
            [predict_split(model, str(cache), split, batch, device, autocast=ctx)[2] for split in ("val", "test")]
        )

    return agreement(probs(contextlib.nullcontext()), probs(autocast))


def setup(s: common.Settings, train_loader, device: torch.device, epoch_s: float) -> dict:
    """What the figures were measured with: device, versions, precision, sizes and the train loader."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "precision": str(s.compute_dtype(device)).removeprefix("torch."),
        "channels_last": device.type == "cuda",
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "compile": s.compile,
        "img_size": s.img_size,
        "batch_size": s.batch_size,
        "workers": train_loader.num_workers,
        "pin_memory": train_loader.pin_memory,
        "train_images": len(train_loader.dataset),
        "epoch_s_target": epoch_s,
    }


def backbone_line(backbone: str, r: dict) -> str:
    return (
        f"{backbone:16s} real {r['real_img_s']['median']:8.1f}  ceiling {r['ceiling_img_s']['median']:8.1f} img/s  "
        f"real/ceiling {r['real_over_ceiling']:.3f}  first batch {r['first_batch_ms']:.0f} ms  loader alone "
        f"{r['loader_img_s']['median']:.0f} img/s  epoch {r['epoch_s']:.1f} s"
        + (f"  stage/real {r['stage_over_real']:.3f}" if "stage_over_real" in r else "")
    )


def batch_line(size: int, other: dict) -> str:
    return (
        f"{'':16s} batch {size:4d}: real {other['real_img_s']['median']:8.1f}  ceiling "
        f"{other['ceiling_img_s']['median']:8.1f} img/s  real/ceiling {other['real_over_ceiling']:.3f}"
    )


# params: the benchmark's settings and cache, then what the command line and the GPU check choose (backbones,
# repeats, DVCLive folder, sync, epoch length, batch sizes, trained models, the agreement's precision), as
# keywords with defaults.
def run(
    s: common.Settings,
    cache: Path,
    device: torch.device,
    backbones: list[str],
    repeats: int,
    live: Path | None,
    sync,
    epoch_s: float = 5.0,
    batch_sizes=OTHER_BATCH_SIZES,
    models: Path | None = None,
    agreement_autocast=None,
) -> dict:
    seed_everything(s.seed, s.deterministic)  # as the train stage: cudnn.benchmark unless deterministic
    train_loader, _ = s.loaders(cache, device)
    n_train = len(train_loader.dataset)
    result = {
        **setup(s, train_loader, device, epoch_s),
        "backbones": {},
        "batch_sizes": {str(b): {} for b in batch_sizes},
    }
    autocast = agreement_autocast if agreement_autocast is not None else precision(s.train.precision, device)[0]
    for backbone in backbones:
        r = bench_backbone(backbone, s, cache, device, repeats, epoch_s)
        if live is not None and (stage := stage_log(live, backbone, s.seed)):
            r.update(stage, stage_over_real=round(stage["stage_img_s"] / r["real_img_s"]["median"], 3))
        if models is not None and (model := models / f"{run_name(backbone, s.seed)}.pt").is_file():
            r["agreement"] = precision_agreement(model, backbone, cache, s, device, autocast)
        result["backbones"][backbone] = r
        sync()
        print(backbone_line(backbone, r), flush=True)
        for size in batch_sizes:  # one timed epoch per side: enough to show the order of magnitude
            if size > n_train:
                result["batch_sizes"][str(size)][backbone] = {"note": f"more than the {n_train} training images"}
                continue
            other = bench_backbone(backbone, s.with_train(batch_size=size), cache, device, 1, epoch_s / 2)
            result["batch_sizes"][str(size)][backbone] = {
                k: other[k] for k in ("real_img_s", "ceiling_img_s", "real_over_ceiling", "epoch_s")
            }
            sync()
            print(batch_line(size, other), flush=True)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (synthetic images) to check the script")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per side and backbone (>= 3)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="a preprocess cache to train from (default: build one at params' img_size)",
    )
    parser.add_argument(
        "--live", type=Path, default=None, help="the train stage's DVCLive folder, to compare its img/s"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="the train stage's models/ folder: fp32 against the train precision on val and test",
    )
    parser.add_argument(
        "--epoch-s",
        type=float,
        default=None,
        help="seconds a timed epoch lasts at least (default 5; 0 with --smoke: one pass)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=list(OTHER_BATCH_SIZES),
        help="larger batches measured beside params' (real and ceiling)",
    )
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/gpu.json)")
    return parser.parse_args()


def training_cache(args: argparse.Namespace, s: common.Settings, tmp: Path) -> tuple[common.Settings, Path, str]:
    """(settings, cache, where its films come from): `--cache` at the size it holds, else one built in
    `tmp` from the benchmark's films (tiny with --smoke, and with a worker so the worker path runs too)."""
    if args.cache is not None:
        size = read_json(args.cache / "meta.json")["preprocess"]["img_size"]
        return s.at_size(size), args.cache, f"the cache {args.cache}"
    if args.smoke:
        s = s.at_size(32).with_data(min_val=1).with_train(batch_size=4, num_workers=1)
    data, source = common.images(tmp, SMOKE_SIZES if args.smoke else None)
    return s, common.cache(data, tmp, s), source


@cli
def main() -> None:
    args = parse_args()
    common.check_repeats(args.repeats, args.smoke)
    s = common.settings()
    device = torch.device("cpu") if args.smoke else pick_device()
    if device.type != "cuda" and not args.smoke:
        raise UserError("bench.gpu needs a CUDA device; use --smoke for a CPU check of the script")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    with common.tempdir() as tmp:
        s, cache, source = training_cache(args, s, Path(tmp))
        # On CPU (smoke) the agreement check still compares fp32 with bf16, as autocast runs there too.
        smoke_autocast = torch.autocast("cpu", dtype=torch.bfloat16) if device.type == "cpu" else None
        epoch_s = args.epoch_s if args.epoch_s is not None else (0.0 if args.smoke else 5.0)
        result = run(
            s,
            cache,
            device,
            args.backbones,
            args.repeats,
            args.live,
            sync,
            epoch_s,
            args.batch_sizes,
            args.models,
            smoke_autocast,
        )
    result.update(
        data=source, smoke=args.smoke, elapsed_s=round(time.perf_counter() - start, 1), **common.stamp(args.repeats)
    )
    path = common.save("gpu", result, args.out)
    print(
        f"{result['device']}, {result['img_size']} px, batch {result['batch_size']}, {result['precision']}, "
        f"{result['workers']} workers ({source}) -> {path}"
    )


if __name__ == "__main__":
    main()
