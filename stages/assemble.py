"""Step `assemble` of `make study-data`: the study's two public sources (DVC imports: Kermany's zip
checked against its pinned sha256, the Hannover repository's files imported at one git commit) ->
data/ in the manifest layout, with SOURCES.csv (docs/study-data.md).

Not a dvc.yaml stage: its output is tracked as data.dvc, the file a user's own data also makes, so
the two ways in cannot collide (DVC refuses an output declared twice).

In this order: both sources checked against their pins -> their films read into a staging folder beside
data/ -> exact duplicates dropped -> each class capped by whole patients -> the patient-grouped split ->
manifest.csv, SOURCES.csv and assembly.json written -> the folder swapped in whole."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import umask, write_json
from stages.lib.core.staging import staging_dir, swap_in
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Assemble
from stages.lib.study.assembly import MARKER, cap, drop_duplicates, split, summary, write_tables
from stages.lib.study.sources import (
    KERMANY_CONTENT,
    check_commit,
    check_pinned,
    import_origin,
    read_hannover,
    read_kermany,
)


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
    said = assemble(args.kermany, args.hannover, args.sums, args.out, cfg.assemble)
    for part, counts in said["counts"].items():
        print(f"{part}: {sum(counts.values())} films " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print("left out: " + left_out_line(said["left_out"]) + f"; details in {args.out / 'assembly.json'}")


def assemble(kermany: Path, hannover: Path, sums: Path, out: Path, a: Assemble) -> dict:
    """Check both sources against their pins (Kermany's zip: its sha256 in `sums`; the Hannover
    folder's imports: one full git commit), then build `out` (replaced whole, or left as it was on
    any failure). `a` is params.yaml's `assemble` section. Returns assembly.json's content."""
    sources = {"kermany": kermany, "hannover": hannover}
    pins = {
        "kermany": {"sha256": check_pinned("Kermany 2018 source", kermany, sums, KERMANY_CONTENT)},
        "hannover": {"commit": check_commit("Hannover COVID-19 source", hannover)},
    }
    origins = {"kermany": import_origin(kermany), "hannover": import_origin(hannover / "data.csv")}
    if out.exists() and not (out / MARKER).is_file():
        raise UserError(
            f"{out} exists and was not assembled from the sources (no {out / MARKER}); move it away "
            "first (your own data: README 'Bring your own data')"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out, 0o777 & ~umask()) as staging:  # a killed run's leftovers go first
        films = read_kermany(kermany, staging)
        hannover_films, left_out = read_hannover(hannover, staging)
        read = films + hannover_films
        unique, duplicates = drop_duplicates(read)
        kept = cap(unique, a.max_per_class, a.seed)
        splits = split(kept, a.val_fraction, a.test_fraction, a.seed)
        kept_paths = {f.path for f in kept}
        for f in read:
            if f.path not in kept_paths:
                (staging / f.path).unlink(missing_ok=True)
        said = summary(sources, pins, origins, read, kept, splits, duplicates, left_out, unique, a)
        write_tables(staging, kept, splits, origins)
        write_json(staging / MARKER, said)
        swap_in(staging, out)
    return said


def left_out_line(left_out: dict) -> str:
    hannover = ", ".join(f"Hannover {why} {n}" for why, n in left_out["hannover"].items())
    return f"{hannover}, duplicates {left_out['duplicates']}, over the caps {left_out['over the per-class caps']}"


if __name__ == "__main__":
    main()
