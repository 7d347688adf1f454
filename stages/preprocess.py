"""Stage `preprocess`: data/ (course layout) -> cache/ (one uint8 array per split + index)."""
from __future__ import annotations

import argparse

from stages.lib.cache import build_cache
from stages.lib.errors import UserError, cli
from stages.lib.io import load_params


def check_params(p: dict) -> None:
    size, ratio = p.get("img_size"), p.get("center_crop_ratio")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise UserError(f"preprocess.img_size must be a positive integer, got {size!r}")
    if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise UserError(f"preprocess.center_crop_ratio must be in (0, 1], got {ratio!r}")
    if not p.get("clahe_clip_limit", 0) > 0 or not isinstance(p.get("clahe_tile_grid"), int) or p["clahe_tile_grid"] < 1:
        raise UserError("preprocess.clahe_clip_limit must be > 0 and preprocess.clahe_tile_grid a positive integer")


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset folder (course layout)")
    parser.add_argument("--out", required=True, help="cache folder to write")
    args = parser.parse_args()
    p = load_params()["preprocess"]
    check_params(p)
    meta = build_cache(args.data, args.out, p)
    for split, counts in meta["counts"].items():
        print(f"{split}: {sum(counts.values())} images " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
