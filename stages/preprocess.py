"""Stage `preprocess`: data/ (any supported layout) -> cache/ (one uint8 array per split + index)
and the data report (counts, image facts, skipped files, leakage, shortcut audit)."""
from __future__ import annotations

import argparse

from stages.lib.cache import build_cache
from stages.lib.data_report import headline, shortcut_headline
from stages.lib.errors import UserError, cli
from stages.lib.io import load_params, write_json
from stages.lib.layouts import LAYOUTS


def check_params(p: dict) -> None:
    size, ratio = p.get("img_size"), p.get("center_crop_ratio")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise UserError(f"preprocess.img_size must be a positive integer, got {size!r}")
    if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise UserError(f"preprocess.center_crop_ratio must be in (0, 1], got {ratio!r}")
    if not p.get("clahe_clip_limit", 0) > 0 or not isinstance(p.get("clahe_tile_grid"), int) or p["clahe_tile_grid"] < 1:
        raise UserError("preprocess.clahe_clip_limit must be > 0 and preprocess.clahe_tile_grid a positive integer")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_data_params(d: dict) -> None:
    choices = {"layout": ("auto",) + LAYOUTS, "on_bad_image": ("error", "skip"), "on_leak": ("error", "warn")}
    for key, allowed in choices.items():
        if d.get(key) not in allowed:
            raise UserError(f"data.{key} must be one of {', '.join(allowed)}, got {d.get(key)!r}")
    for key in ("val_fraction", "test_fraction"):
        if not isinstance(d.get(key), (int, float)) or not 0 < d[key] <= 0.5:
            raise UserError(f"data.{key} must be in (0, 0.5], got {d.get(key)!r}")
    for key, low in (("min_val", 0), ("max_pixels", 1), ("near_duplicate_distance", 0), ("seed", 0)):
        if not _int(d.get(key)) or d[key] < low:
            raise UserError(f"data.{key} must be an integer >= {low}, got {d.get(key)!r}")


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset folder (see README for the layouts)")
    parser.add_argument("--out", required=True, help="cache folder to write")
    parser.add_argument("--report", required=True, help="data report JSON to write")
    parser.add_argument("--headline", required=True, help="headline JSON to write: the number of images")
    parser.add_argument("--shortcut", required=True, help="headline JSON to write: the metadata-only baseline's macro-F1")
    args = parser.parse_args()
    params = load_params()
    p, d = params["preprocess"], params.get("data", {})
    check_params(p)
    check_data_params(d)
    report = build_cache(args.data, args.out, args.report, p, d)
    write_json(args.headline, headline(report))
    write_json(args.shortcut, shortcut_headline(report))
    for split, counts in report["counts"].items():
        print(f"{split}: {sum(counts.values())} images " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for split in ("val", "test"):
        if split in report["shortcut"]:
            print(f"shortcut audit ({split}): file metadata alone reaches macro-F1 "
                  f"{report['shortcut'][split]['macro_f1']:.3f}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} bad file(s); see {args.report}")


if __name__ == "__main__":
    main()
