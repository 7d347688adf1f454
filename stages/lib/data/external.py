"""External validation, the cache: a labelled dataset from elsewhere preprocessed with the study's
settings into its own cache (one split, `external`; stage external@<name>). Scoring it, as test is,
is stages/lib/results/external_scores.py's (evaluate, combine, ensemble and report use it without this
module's preprocessing code).

Any layout preprocess reads is accepted; its splits are pooled (all of it is external test data) and
its labels must be in data.classes (the layout readers refuse others, naming the file or folder).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.files import umask, write_json
from stages.lib.core.provenance import data_hash
from stages.lib.data.cache import SYNTHETIC_MARKER, decode_all, skip_or_refuse
from stages.lib.data.cache_writer import swap_in, write_split
from stages.lib.data.dataset import file_records
from stages.lib.data.layouts import detect_layout, read_layout
from stages.lib.data.records import check_paths
from stages.lib.data.splits import unique_names
from stages.lib.params.schema import Data, Preprocess

SPLIT = "external"  # the one split of an external cache: <cache>/external.npy, external.csv (its meta.json's counts)


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
    samples = unique_names([s for ss in read_layout(data_dir, layout, d.classes).values() for s in ss])
    unlabelled = next((s for s in samples if s.label is None), None)
    if unlabelled is not None:
        raise UserError(
            f"{unlabelled.source or unlabelled.path}: {unlabelled.name} has no label; an external set "
            "is scored, so every film needs one"
        )
    missing = {e.path for e in skip_or_refuse(check_paths(samples, data_dir), d.on_bad_image)}
    samples = [s for s in samples if s.path not in missing]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o777 & ~umask())
    try:
        images, facts, _ = decode_all(samples, staging / "all.npy", p, d, workers)
        keep = [i for i, f in enumerate(facts) if f is not None]
        if not keep:
            raise UserError(f"{data_dir}: no readable image; nothing to score")
        kept = [samples[i] for i in keep]
        write_split(staging, SPLIT, images, keep, kept, d.classes, [facts[i] for i in keep])
        images.close()
        (staging / "all.npy").unlink()
        counts = {c: sum(s.label == k for s in kept) for k, c in enumerate(d.classes)}
        meta = {
            "classes": list(d.classes),
            "preprocess": p.model_dump(),
            "layout": layout,
            "counts": {SPLIT: counts},
            "synthetic": (data_dir / SYNTHETIC_MARKER).exists(),
            "data": data_hash(data_dir),
            "files": file_records(staging, [SPLIT]),
        }
        write_json(staging / "meta.json", meta)
        swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta
