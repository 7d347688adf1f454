"""Stage `preprocess`: data/ (any supported layout) -> cache/ (one uint8 array per split + index)
and the data report (counts, image facts, skipped files, leakage, shortcut audit)."""

from __future__ import annotations

import argparse

from stages.lib.audit.data_report import headline, shortcut_headline
from stages.lib.core.errors import cli
from stages.lib.core.files import write_json
from stages.lib.core.names import SCORED_SPLITS
from stages.lib.data.cache import build_cache
from stages.lib.params.loader import load_params


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset folder (see README for the layouts)")
    parser.add_argument("--out", required=True, help="cache folder to write")
    parser.add_argument("--report", required=True, help="data report JSON to write")
    parser.add_argument("--headline", required=True, help="headline JSON to write: the number of images")
    parser.add_argument(
        "--shortcut", required=True, help="headline JSON to write: the metadata-only baseline's macro-F1"
    )
    parser.add_argument(
        "--shortcut-predictions",
        required=True,
        help="folder for that baseline's per-image predictions (val.csv, test.csv)",
    )
    args = parser.parse_args()
    cfg = load_params()
    report = build_cache(
        args.data, args.out, args.report, cfg.preprocess, cfg.data, shortcut_dir=args.shortcut_predictions
    )
    write_json(args.headline, headline(report))
    write_json(args.shortcut, shortcut_headline(report))
    for split, counts in report["counts"].items():
        print(f"{split}: {sum(counts.values())} images " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for split in SCORED_SPLITS:
        if split in report["shortcut"]:
            print(
                f"shortcut audit ({split}): file metadata alone reaches macro-F1 "
                f"{report['shortcut'][split]['macro_f1']:.3f}"
            )
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} bad file(s); see {args.report}")


if __name__ == "__main__":
    main()
