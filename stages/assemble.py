"""Step `assemble` of `make study-data`: the study's two public sources (DVC imports: Kermany's zip
checked against its pinned sha256, the Hannover repository's files imported at one git commit) ->
data/ in the manifest layout, with SOURCES.csv (docs/study-data.md).

Not a dvc.yaml stage: its output is tracked as data.dvc, the file a user's own data also makes, so
the two ways in cannot collide (DVC refuses an output declared twice)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core.errors import UserError, cli
from stages.lib.params.loader import load_params
from stages.lib.study.assembly import assemble


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kermany", required=True, type=Path, help="ChestXRay2017.zip, as imported")
    parser.add_argument(
        "--hannover", required=True, type=Path, help="folder of the Hannover repository's png/ and data.csv, imported"
    )
    parser.add_argument(
        "--sums", required=True, type=Path, help="the pinned sha256 of each downloaded file (SHA256SUMS)"
    )
    parser.add_argument("--out", required=True, type=Path, help="data folder to write (replaced whole)")
    args = parser.parse_args()
    cfg = load_params()
    if cfg.assemble is None:
        raise UserError("params.yaml has no assemble section; add it (docs/params.md lists its keys and defaults)")
    summary = assemble(args.kermany, args.hannover, args.sums, args.out, cfg.assemble)
    for split, counts in summary["counts"].items():
        print(f"{split}: {sum(counts.values())} films " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print("left out: " + left_out_line(summary["left_out"]) + f"; details in {args.out / 'assembly.json'}")


def left_out_line(left_out: dict) -> str:
    hannover = ", ".join(f"Hannover {why} {n}" for why, n in left_out["hannover"].items())
    return f"{hannover}, duplicates {left_out['duplicates']}, over the caps {left_out['over the per-class caps']}"


if __name__ == "__main__":
    main()
