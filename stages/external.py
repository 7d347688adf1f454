"""Stage `external@<name>`: one external labelled dataset (params.yaml `external`) -> its own cache
(cache_external/<name>), preprocessed as the internal data was. The evaluate stages score every model
on it (block `external` of each metrics file); docs/calibration.md says how to read the numbers.

In this order: the internal cache's preprocessing checked against params -> the set's own layout read (any
layout preprocess reads; its splits pooled, all of it is external test data; its labels must be in
data.classes, the layout readers refuse others naming the file or folder), every film labelled, its paths
checked -> decoded and preprocessed in parallel as preprocess does -> one split, `external`, and meta.json
written, the cache swapped in whole. Scoring it, as test is, is stages/lib/results/external_scores.py's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import read_json, umask, write_json
from stages.lib.core.staging import staging_dir, swap_in
from stages.lib.data.cache_writer import cache_meta, decode_all, skip_or_refuse, space_needed, write_split
from stages.lib.data.dataset import verify_cache
from stages.lib.data.layouts import detect_layout, read_layout
from stages.lib.data.records import Sample, check_paths
from stages.lib.data.splits import unique_names
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config, Data, Preprocess

SPLIT = "external"  # the one split of an external cache: <cache>/external.npy, external.csv (its meta.json's counts)


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the external set's name (its key under `external`)")
    parser.add_argument("--data", required=True, help="its folder, in any layout preprocess reads")
    parser.add_argument("--cache", required=True, help="its own preprocessed cache to write")
    parser.add_argument("--cache-meta", required=True, help="the internal cache's meta.json (classes, preprocessing)")
    args = parser.parse_args()
    meta = external(load_params(), args.data, args.cache, read_json(args.cache_meta))
    counts = meta["counts"][SPLIT]
    absent = [c for c, n in counts.items() if not n]
    print(
        f"external {args.name}: {sum(counts.values())} films in {args.cache}"
        + (f" (absent: {', '.join(absent)})" if absent else "")
    )


def external(cfg: Config, data_dir: str, cache_dir: str, internal_meta: dict) -> dict:
    """Preprocess `data_dir` into `cache_dir` as the internal data was; its cache's meta."""
    if internal_meta["preprocess"] != cfg.preprocess.model_dump():
        raise UserError(
            f"the internal cache was preprocessed with {internal_meta['preprocess']}, params.yaml says "
            f"{cfg.preprocess.model_dump()}; rerun the pipeline (dvc repro)"
        )
    build_external_cache(data_dir, cache_dir, cfg.preprocess, cfg.data)
    return verify_cache(cache_dir)


def build_external_cache(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike, p: Preprocess, d: Data, workers: int | None = None
) -> dict:
    """Preprocess every labelled film under `data_dir` into `out_dir` (swapped in whole); its meta."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"external folder {data_dir} not found; fix its path under `external` in params.yaml, or "
            f"track it (dvc add {data_dir})"
        )
    layout = detect_layout(data_dir)  # its own layout, whatever data.layout says of data/
    samples = _labelled(unique_names([s for ss in read_layout(data_dir, layout, d.classes).values() for s in ss]))
    missing = {e.path for e in skip_or_refuse(check_paths(samples, data_dir), d.on_bad_image)}
    samples = [s for s in samples if s.path not in missing]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out_dir, 0o777 & ~umask()) as staging, space_needed(out_dir, len(samples), p.img_size):
        images, facts, _ = decode_all(samples, staging, p, d, workers)
        keep = [i for i, f in enumerate(facts) if f is not None]
        if not keep:
            raise UserError(f"{data_dir}: no readable image; nothing to score")
        kept = [samples[i] for i in keep]
        write_split(staging, SPLIT, images, keep, kept, d.classes, [facts[i] for i in keep])
        images.discard()
        counts = {c: sum(s.label == k for s in kept) for k, c in enumerate(d.classes)}
        meta = cache_meta(staging, data_dir, p, d.classes, {SPLIT: counts}, layout)
        write_json(staging / "meta.json", meta)
        swap_in(staging, out_dir)
    return meta


def _labelled(samples: list[Sample]) -> list[Sample]:
    """An external set is scored, so every film needs a label: the first without one is refused."""
    unlabelled = next((s for s in samples if s.label is None), None)
    if unlabelled is not None:
        raise UserError(
            f"{unlabelled.source or unlabelled.path}: {unlabelled.name} has no label; an external set "
            "is scored, so every film needs one"
        )
    return samples


if __name__ == "__main__":
    main()
