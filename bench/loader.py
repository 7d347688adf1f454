"""Training images/s delivered by our loader (cache memmap + augment) vs the study's (decode + CLAHE + ...).

    python -m bench.loader                       -> bench/results/loader.json
    python -m bench.loader --smoke --out X.json  # tiny synthetic run that checks the script

Headline at the study's configuration (params: 256 px, batch 16), other sizes under `other_sizes`.
Both loaders read the same images through the same class-balanced sampler (same seed, so the same
draws), batch size and worker count (the study's max(1, cores // 2) unless --workers says
otherwise), run the same albumentations augmentations, and end in the same thing: a normalised
3-channel float batch (ours through `to_model_input`, the study's through Normalize + ToTensorV2).
After one warm-up epoch each (worker start-up, page cache), the two are timed epoch by epoch in
turn, `--repeats` times; the speedup is the ratio of the medians, with the range the extremes allow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import common
from stages.lib.core.errors import cli
from stages.lib.data.transforms import to_model_input

SMOKE_SIZES = {"train": 12, "val": 4, "test": 4}


def one_epoch(loader, to_input=lambda x: x) -> None:
    for x, _y in loader:
        to_input(x)


def measure(data: Path, tmp: Path, s: common.Settings, workers: int, repeats: int) -> dict:
    """Both loaders at `s.img_size`: img/s spreads and the speedup."""
    cache = common.cache(data, tmp, s)
    ours = common.loader(common.ours(cache, s), s, workers)
    study = common.loader(common.StudySplit(data, "train", s, augment=True), s, workers)
    n = common.same_images(ours.dataset, study.dataset)
    runs = common.interleaved(
        {"ours": lambda: one_epoch(ours, lambda x: to_model_input(x, "cpu")), "study": lambda: one_epoch(study)},
        repeats,
    )
    ours_img_s = [n / seconds for seconds, _ in runs["ours"]]
    study_img_s = [n / seconds for seconds, _ in runs["study"]]
    o, st = common.spread(ours_img_s, 1), common.spread(study_img_s, 1)
    return {
        "img_size": s.img_size,
        "speedup": round(o["median"] / st["median"], 2),
        "speedup_range": [round(o["min"] / st["max"], 2), round(o["max"] / st["min"], 2)],
        "ours_img_s": o,
        "study_img_s": st,
        "images_per_epoch": n,
    }


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workers",
        type=int,
        default=common.study_workers(),
        help="DataLoader workers, both loaders (default: the study's max(1, cores // 2))",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per loader and size (>= 3)")
    parser.add_argument("--other-sizes", type=int, nargs="*", default=[64], help="image sizes besides params' img_size")
    parser.add_argument(
        "--data", type=Path, default=None, help="course-layout images (default: ../shared/data/cxr4, else synthetic)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic images at 32 px: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/loader.json)")
    args = parser.parse_args()
    common.check_repeats(args.repeats, args.smoke)
    s = common.settings()
    if args.smoke:
        s, args.other_sizes = s.at_size(32).with_data(min_val=1), [16]
    start = time.perf_counter()
    with common.tempdir() as tmp:
        data, source = common.images(Path(tmp), SMOKE_SIZES if args.smoke else None, args.data)
        head = measure(data, Path(tmp), s, args.workers, args.repeats)
        others = [measure(data, Path(tmp), s.at_size(size), args.workers, args.repeats) for size in args.other_sizes]
    result = {
        **head,
        "repeats": args.repeats,
        "batch_size": s.batch_size,
        "workers": args.workers,
        "workers_rule": "both loaders get the same workers; default the study's max(1, cores // 2)",
        "data": source,
        "smoke": args.smoke,
        "other_sizes": others,
        "elapsed_s": round(time.perf_counter() - start, 1),
        **common.stamp(args.repeats),
    }
    path = common.save("loader", result, args.out)
    print(f"loader, {head['images_per_epoch']} images, batch {s.batch_size}, {args.workers} workers ({source}):")
    for r in [head, *others]:
        print(
            f"  {r['img_size']:4d} px  ours {r['ours_img_s']['median']:8.1f} img/s   study {r['study_img_s']['median']:7.1f} "
            f"img/s   speedup {r['speedup']:.1f}x (range {r['speedup_range'][0]}-{r['speedup_range'][1]})"
        )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
