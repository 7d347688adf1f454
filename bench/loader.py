"""Images/s delivered by our loader (cache memmap + augment) vs the study's (decode + CLAHE + ...).

    python -m bench.loader [--workers N] [--epochs N]     -> bench/results/loader.json

Both loaders use the same images, the same class-balanced sampler, batch size and worker count,
the same albumentations augmentations, and end in the same thing: a normalised 3-channel float
batch (ours through `to_model_input`, the study's through Normalize + ToTensorV2). Each is
warmed up for one epoch (worker start-up), then timed over `--epochs` epochs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench import common
from stages.lib.transforms import to_model_input


def images_per_s(loader, epochs: int, to_input=lambda x: x) -> float:
    def one_epoch():
        for x, _y in loader:
            to_input(x)

    one_epoch()  # warm-up: starts the (persistent) workers
    return epochs * len(loader.dataset) / common.timed(lambda: [one_epoch() for _ in range(epochs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both loaders")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader")
    args = parser.parse_args()
    p = common.params()
    batch, seed = p.train.batch_size, p.train.seed
    with common.tempdir() as tmp:
        data, source = common.images(Path(tmp))
        cache = common.cache(data, Path(tmp), p.preprocess)
        ours = common.loader(common.ours(cache, p.augment, seed), batch, args.workers, seed)
        study = common.loader(common.StudySplit(data, "train", p.preprocess, p.augment, seed),
                              batch, args.workers, seed)
        ours_img_s = images_per_s(ours, args.epochs, lambda x: to_model_input(x, "cpu"))
        study_img_s = images_per_s(study, max(1, args.epochs // 3))  # slow: fewer epochs suffice
    result = {
        "ours_img_s": round(ours_img_s, 1), "study_img_s": round(study_img_s, 1),
        "speedup": round(ours_img_s / study_img_s, 2),
        "images": len(ours.dataset), "img_size": p.preprocess.img_size, "batch_size": batch,
        "workers": args.workers, "data": source, "machine": common.machine(),
    }
    path = common.save("loader", result)
    print(f"loader, {result['images']} images at {result['img_size']} px, {args.workers} workers ({source}):\n"
          f"  ours  {ours_img_s:8.1f} img/s (cache memmap + augment)\n"
          f"  study {study_img_s:8.1f} img/s (decode + CLAHE + resize + augment)\n"
          f"  speedup {result['speedup']:.1f}x  -> {path}")


if __name__ == "__main__":
    main()
