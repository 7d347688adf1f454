"""Stage `external@<name>`: one external labelled dataset (params.yaml `external`) -> its own cache
(cache_external/<name>), preprocessed as the internal data was. The evaluate stages score every model
on it (block `external` of each metrics file); docs/calibration.md says how to read the numbers.
"""

from __future__ import annotations

import argparse

from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import read_json
from stages.lib.data import external as ext
from stages.lib.data.dataset import verify_cache
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config


def external(cfg: Config, data_dir: str, cache_dir: str, cache_meta: dict) -> dict:
    """Preprocess `data_dir` into `cache_dir` as the internal data was; its cache's meta."""
    if cache_meta["preprocess"] != cfg.preprocess.model_dump():
        raise UserError(
            f"the internal cache was preprocessed with {cache_meta['preprocess']}, params.yaml says "
            f"{cfg.preprocess.model_dump()}; rerun the pipeline (dvc repro)"
        )
    ext.build_external_cache(data_dir, cache_dir, cfg.preprocess, cfg.data)
    return verify_cache(cache_dir)


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the external set's name (its key under `external`)")
    parser.add_argument("--data", required=True, help="its folder, in any layout preprocess reads")
    parser.add_argument("--cache", required=True, help="its own preprocessed cache to write")
    parser.add_argument("--cache-meta", required=True, help="the internal cache's meta.json (classes, preprocessing)")
    args = parser.parse_args()
    meta = external(load_params(), args.data, args.cache, read_json(args.cache_meta))
    counts = meta["counts"][ext.SPLIT]
    absent = [c for c, n in counts.items() if not n]
    print(
        f"external {args.name}: {sum(counts.values())} films in {args.cache}"
        + (f" (absent: {', '.join(absent)})" if absent else "")
    )


if __name__ == "__main__":
    main()
