"""Training images/s per backbone: real cached loader vs the compute ceiling vs the study's loader.

    python -m bench.gpu                      # on a CUDA machine -> bench/results/gpu.json
    python -m bench.gpu --smoke --out X.json # CPU, tiny images and steps: checks the script works

For each backbone, the same training step (to_model_input -> forward -> backward -> AdamW, with
the train stage's `precision` and channels_last on CUDA) is fed three ways:
  real     our loader: preprocess cache (memmap) + augment in DataLoader workers, pinned memory
  ceiling  one synthetic uint8 batch already on the device: nothing to wait for
  study    the study's loader: decode + CLAHE + resize + augment + normalise per image
`real_over_ceiling` near 1 means the GPU never waits for data. The step is identical in the three
cases, so the figures differ only by the input pipeline.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from torch import nn

from bench import common
from stages.lib.errors import UserError, cli
from stages.lib.models import BACKBONES, build_model
from stages.lib.runtime import pick_device, precision, resolve_workers
from stages.lib.transforms import to_model_input

SMOKE = {"img_size": 32, "batch_size": 4, "steps": 2, "warmup": 1, "study_steps": 1}
FULL = {"img_size": 256, "batch_size": None, "steps": 60, "warmup": 10, "study_steps": 20}


def make_step(backbone: str, device: torch.device, lr: float):
    """A closure running one training step on a batch (uint8 [B,1,S,S] or normalised float [B,3,S,S])."""
    model = build_model(backbone, 4, 0.1, pretrained=False).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    autocast, scaler = precision("auto", device)
    criterion = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if x.dtype == torch.uint8:
            x = to_model_input(x, device, channels_last=cuda)
        else:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last if cuda else torch.contiguous_format)
        y = y.to(device, non_blocking=True)
        with autocast:
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def images_per_s(step, batches, steps: int, warmup: int, batch_size: int, sync) -> float:
    """Run `warmup` then `steps` steps over the (cycled) batches; img/s of the timed part."""
    batches = iter(batches)
    for x, y in itertools.islice(batches, warmup):
        step(x, y)
    timed = lambda: [step(x, y) for x, y in itertools.islice(batches, steps)]  # noqa: E731
    return steps * batch_size / common.timed(timed, sync)


def epochs(loader):
    """Batches over as many epochs as asked for (persistent workers keep running between them)."""
    while True:
        yield from loader


def bench_backbone(backbone, device, cfg, cache, data, p, workers, sync) -> dict:
    b, s, seed = cfg["batch_size"], cfg["img_size"], p.train.seed
    pre = p.preprocess.model_copy(update={"img_size": s})
    lr = p.train.lr
    pin = device.type == "cuda"
    resident = (torch.randint(0, 256, (b, 1, s, s), dtype=torch.uint8, device=device),
                torch.randint(0, 4, (b,), device=device))
    ceiling = images_per_s(make_step(backbone, device, lr), itertools.repeat(resident), cfg["steps"], cfg["warmup"], b, sync)
    ours = common.loader(common.ours(cache, p.augment, seed), b, workers, seed, pin_memory=pin)
    real = images_per_s(make_step(backbone, device, lr), epochs(ours), cfg["steps"], cfg["warmup"], b, sync)
    study_set = common.StudySplit(data, "train", pre, p.augment, seed)
    study_loader = common.loader(study_set, b, workers, seed, pin_memory=pin)
    study = images_per_s(make_step(backbone, device, lr), epochs(study_loader), cfg["study_steps"], cfg["warmup"], b, sync)
    return {"real_img_s": round(real, 1), "ceiling_img_s": round(ceiling, 1), "study_img_s": round(study, 1),
            "real_over_ceiling": round(real / ceiling, 3), "real_over_study": round(real / study, 2)}


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (synthetic images) to check the script")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/gpu.json)")
    args = parser.parse_args()
    p = common.params()
    cfg = dict(SMOKE if args.smoke else FULL)
    cfg["batch_size"] = cfg["batch_size"] or p.train.batch_size
    device = torch.device("cpu") if args.smoke else pick_device()
    if device.type != "cuda" and not args.smoke:
        raise UserError("bench.gpu needs a CUDA device; use --smoke for a CPU check of the script")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    workers = resolve_workers("auto", device)
    with common.tempdir() as tmp:
        if args.smoke:
            data, source = common.images(Path(tmp), {"train": 8, "val": 4, "test": 4}, synthetic=True)
        else:
            data, source = common.images(Path(tmp))
        cache = common.cache(data, Path(tmp), p.preprocess.model_copy(update={"img_size": cfg["img_size"]}))
        result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "smoke": args.smoke, **cfg, "workers": workers, "data": source, "machine": common.machine()}
        for backbone in args.backbones:
            result[backbone] = r = bench_backbone(backbone, device, cfg, cache, data, p, workers, sync)
            print(f"{backbone:16s} real {r['real_img_s']:8.1f}  ceiling {r['ceiling_img_s']:8.1f}  "
                  f"study {r['study_img_s']:8.1f} img/s   real/ceiling {r['real_over_ceiling']:.2f}  "
                  f"real/study {r['real_over_study']:.1f}x", flush=True)
    path = common.save("gpu", result, args.out)
    print(f"{result['device']}, {cfg['img_size']} px, batch {cfg['batch_size']}, {workers} workers ({source}) -> {path}")


if __name__ == "__main__":
    main()
