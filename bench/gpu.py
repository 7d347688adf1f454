"""Training images/s per backbone on a GPU: does the GPU ever wait for data?

    python -m bench.gpu [--cache DIR] [--live DIR]   # on a CUDA machine -> bench/results/gpu.json
    python -m bench.gpu --smoke --out X.json          # CPU, tiny images: checks the script

For each backbone the train stage's own epoch function (`train_one_epoch`: to_model_input ->
autocast forward -> backward -> AdamW, with its per-batch loss.item()/argmax) runs, set up as
`fit` sets it up (params' precision, channels_last and cudnn.benchmark on CUDA, class-weighted
loss, the stage's `make_loaders`: sampler, workers, pinned memory), fed two ways:
  real     the train stage's loader over the preprocess cache
  ceiling  one batch already on the device, as many times as the loader has batches
`real_over_ceiling` near 1 means the GPU never waits for data. Both are img/s as the train stage
logs them (images / the function's own epoch time), median of `--repeats` epochs after one
warm-up epoch, taken in turn. `first_batch_ms` is how long each real epoch waited for its first
batch (paid once per epoch, so it weighs more on short epochs); `loader_img_s` is the loader alone.
With `--live`, each backbone's last-epoch `train/images_per_s` from the train stage's DVCLive
log is set beside `real` (`stage_over_real`).
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from bench import common
from stages.lib.errors import UserError, cli
from stages.lib.io import read_json
from stages.lib.models import BACKBONES
from stages.lib.runtime import pick_device, seed_everything
from stages.lib.training import train_one_epoch

SMOKE_SIZES = {"train": 12, "val": 4, "test": 4}


class Watched:
    """A loader that notes, per epoch, how long the first batch took to arrive."""

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


def bench_backbone(backbone: str, s: common.Settings, cache: Path, device: torch.device, repeats: int) -> dict:
    train_loader, _ = s.loaders(cache, device)
    net, criterion, optimizer, scaler, autocast = common.training_parts(s, backbone, train_loader.dataset.labels, device)
    x, y = next(iter(train_loader))
    resident = [(x.to(device), y.to(device))] * len(train_loader)
    watched = Watched(train_loader)

    def epoch(batches):
        return lambda: train_one_epoch(net, batches, criterion, optimizer, scaler, device, autocast, desc=backbone)

    runs = common.interleaved({"real": epoch(watched), "ceiling": epoch(resident)}, repeats)
    real = common.spread([r.n / r.seconds for _, r in runs["real"]], 1)
    ceiling = common.spread([r.n / r.seconds for _, r in runs["ceiling"]], 1)
    loader_s = [common.timed(lambda: list(train_loader))[0] for _ in range(repeats)]
    return {"real_img_s": real, "ceiling_img_s": ceiling,
            "real_over_ceiling": round(real["median"] / ceiling["median"], 3),
            "first_batch_ms": round(1000 * sorted(watched.first_s[1:])[len(watched.first_s[1:]) // 2], 1),
            "loader_img_s": common.spread([len(train_loader.dataset) / t for t in loader_s], 1),
            "images_per_epoch": runs["real"][0][1].n}


def stage_img_s(live: Path, backbone: str, seed: int) -> float | None:
    """The train stage's img/s in its last logged epoch (DVCLive), or None without a log."""
    path = live / backbone / f"seed{seed}" / "plots" / "metrics" / "train" / "images_per_s.tsv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return float(rows[-1]["images_per_s"]) if rows else None


def run(s: common.Settings, cache: Path, device: torch.device, backbones: list[str], repeats: int,
        live: Path | None, sync) -> dict:
    seed_everything(s.seed, s.deterministic)  # as the train stage: cudnn.benchmark unless deterministic
    train_loader, _ = s.loaders(cache, device)
    dtype = s.compute_dtype(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "precision": str(dtype).removeprefix("torch."), "channels_last": device.type == "cuda",
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "compile": s.compile,
        "img_size": s.img_size, "batch_size": s.batch_size, "workers": train_loader.num_workers,
        "pin_memory": train_loader.pin_memory, "train_images": len(train_loader.dataset), "backbones": {},
    }
    for backbone in backbones:
        r = bench_backbone(backbone, s, cache, device, repeats)
        if live is not None and (stage := stage_img_s(live, backbone, s.seed)) is not None:
            r.update(stage_img_s=round(stage, 1), stage_over_real=round(stage / r["real_img_s"]["median"], 3))
        result["backbones"][backbone] = r
        sync()
        print(f"{backbone:16s} real {r['real_img_s']['median']:8.1f}  ceiling {r['ceiling_img_s']['median']:8.1f} img/s  "
              f"real/ceiling {r['real_over_ceiling']:.3f}  first batch {r['first_batch_ms']:.0f} ms  loader alone "
              f"{r['loader_img_s']['median']:.0f} img/s" + (f"  stage/real {r['stage_over_real']:.3f}" if "stage_over_real" in r else ""),
              flush=True)
    return result


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (synthetic images) to check the script")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per side and backbone (>= 3)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a preprocess cache to train from (default: build one at params' img_size)")
    parser.add_argument("--live", type=Path, default=None, help="the train stage's DVCLive folder, to compare its img/s")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/gpu.json)")
    args = parser.parse_args()
    common.check_repeats(args.repeats, args.smoke)
    s = common.settings()
    device = torch.device("cpu") if args.smoke else pick_device()
    if device.type != "cuda" and not args.smoke:
        raise UserError("bench.gpu needs a CUDA device; use --smoke for a CPU check of the script")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    with common.tempdir() as tmp:
        cache, source = args.cache, f"the cache {args.cache}"
        if cache is not None:  # train at the size the cache holds
            s = s.at_size(read_json(cache / "meta.json")["preprocess"]["img_size"])
        else:
            if args.smoke:  # tiny, and with a worker so the worker path runs too
                s = s.at_size(32).with_data(min_val=1).with_train(batch_size=4, num_workers=1)
            data, source = common.images(Path(tmp), SMOKE_SIZES if args.smoke else None)
            cache = common.cache(data, Path(tmp), s)
        result = run(s, cache, device, args.backbones, args.repeats, args.live, sync)
    result.update(data=source, smoke=args.smoke, elapsed_s=round(time.perf_counter() - start, 1), **common.stamp(args.repeats))
    path = common.save("gpu", result, args.out)
    print(f"{result['device']}, {result['img_size']} px, batch {result['batch_size']}, {result['precision']}, "
          f"{result['workers']} workers ({source}) -> {path}")


if __name__ == "__main__":
    main()
