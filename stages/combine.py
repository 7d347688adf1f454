"""Stage `combine@<backbone>`: a backbone's seeds -> its result, the seed ensemble (the mean of its
runs' probabilities), scored like one model, with each seed's numbers, their mean and sd, and a
pooled CI for a single run beside it (metrics/<backbone>.json, `seeds`)."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from stages.lib.core import provenance
from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import read_json, write_json
from stages.lib.core.names import SCORED_SPLITS, seed_run
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Evaluate, HideLungs
from stages.lib.report import cards
from stages.lib.results.comparisons import seed_block
from stages.lib.results.metrics import headline
from stages.lib.results.run_means import score_runs_mean


# params: the command line (dvc.yaml's cmd: --backbone, --runs, --predictions, --cache-meta's content, --metrics,
# --headline) and params.yaml's `seeds`, `evaluate`, `external` and `hide_lungs`, one each: the stage's interface.
def combine(
    backbone: str,
    seeds,
    runs_dir: str,
    predictions_dir: str,
    cache_meta: dict,
    metrics_path: str,
    headline_path: str,
    e: Evaluate,
    external: list[str] = (),
    hide: HideLungs | None = None,
) -> dict:
    """Score the seed ensemble of `backbone` over `seeds` (on test, on each set in `external` and, with
    `hide`, on test with the lungs hidden, from its runs' predictions); write its predictions and metrics."""
    classes = cache_meta["classes"]
    per_seed = {}
    for s in seeds:
        path = Path(runs_dir) / f"seed{s}.json"
        if not path.is_file():
            raise UserError(
                f"{path} not found: seed {s} of {backbone} has not been evaluated; "
                f"run dvc repro evaluate@{backbone}-{s}"
            )
        per_seed[s] = read_json(path)
    folders = [seed_run(predictions_dir, s) for s in seeds]
    # the seed ensemble, scored like one model (with its own fit on the mean of its runs' val probabilities)
    report, runs = score_runs_mean(folders, classes, Path(predictions_dir), e, external, hide)
    report["seeds"] = seed_block(per_seed, *runs["test"], e.bootstrap_resamples, e.seed)
    # One number for the table: the median run's; every seed's own is in `seeds`.
    report["best_epoch"] = statistics.median_low(m["best_epoch"] for m in per_seed.values())
    report["epochs_run"] = statistics.median_low(m["epochs_run"] for m in per_seed.values())
    report["provenance"] = {
        **provenance.stamp(
            {"backbone": backbone, "seeds": list(seeds), "evaluate": e.model_dump()}, cache_meta.get("data")
        ),
        "runs": {str(s): m.get("provenance") for s, m in per_seed.items()},
    }
    write_json(metrics_path, report)
    write_json(headline_path, headline(report))
    return report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--runs", required=True, help="folder of the runs' metrics: seed<seed>.json")
    parser.add_argument(
        "--predictions",
        required=True,
        help="the backbone's predictions folder: reads seeds/seed<seed>/, writes val.csv and test.csv",
    )
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json (class list)")
    parser.add_argument("--metrics", required=True, help="detail metrics JSON to write")
    parser.add_argument("--headline", required=True, help="headline metrics JSON to write (the DVC metric)")
    cards.add_arguments(parser)
    args = parser.parse_args()
    cfg = load_params()
    meta = read_json(args.cache_meta)
    r = combine(
        args.backbone,
        cfg.seeds,
        args.runs,
        args.predictions,
        meta,
        args.metrics,
        args.headline,
        cfg.evaluate,
        list(cfg.external),
        cfg.hide_lungs,
    )
    cards.write_card_from(args, f"{args.backbone} (seed ensemble)", bool(meta.get("synthetic")))
    spread = (
        f" (seeds: mean {r['seeds']['mean']['test']['macro_f1']:.4f}"
        + (f" sd {r['seeds']['sd']['test']['macro_f1']:.4f})" if r["seeds"]["sd"] else ", 1 seed)")
        if r["test"]
        else ""
    )
    print(
        f"{args.backbone}, {len(cfg.seeds)} seed(s): "
        + " | ".join(f"{s} macro-F1 {r[s]['macro_f1']:.4f}" if r[s] else f"{s}: labels hidden" for s in SCORED_SPLITS)
        + spread
    )


if __name__ == "__main__":
    main()
