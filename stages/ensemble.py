"""Stage `ensemble`: the mean of every run's probabilities (backbones x seeds), scored like a backbone
(on test and on each external set named in params)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core import provenance
from stages.lib.core.errors import cli
from stages.lib.core.files import read_json, write_json
from stages.lib.core.names import SCORED_SPLITS, run_name, seed_run
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Evaluate, HideLungs
from stages.lib.report import cards
from stages.lib.results.metrics import headline
from stages.lib.results.run_means import score_runs_mean


def run_folders(predictions_dir: str | Path, backbones, seeds) -> dict[str, Path]:
    """{"<backbone>/seed<seed>": its evaluate stage's predictions folder} for every run."""
    return {run_name(b, s): seed_run(Path(predictions_dir) / b, s) for b in backbones for s in seeds}


# params: the command line (dvc.yaml's cmd: --predictions, --cache-meta's content, --out, --metrics, --headline)
# and params.yaml's `backbones`, `seeds`, `evaluate`, `external` and `hide_lungs`, one each: the stage's interface.
def ensemble(
    backbones,
    seeds,
    predictions_dir: str,
    cache_meta: dict,
    out_dir: str,
    metrics_path: str,
    headline_path: str,
    e: Evaluate,
    external: list[str] = (),
    hide: HideLungs | None = None,
) -> dict:
    """Average every run's per-image probabilities; write predictions and metrics like evaluate (with `hide`,
    the `lungs_hidden` block from the runs' predictions with the lungs hidden)."""
    classes = cache_meta["classes"]
    runs = run_folders(predictions_dir, backbones, seeds)
    # fitted on the mean of every run's val probabilities (in its metrics: `fitted`)
    scores, _ = score_runs_mean(list(runs.values()), classes, Path(out_dir), e, external, hide)
    report = {"members": list(runs), **scores}
    report["provenance"] = provenance.stamp(
        {"backbones": list(backbones), "seeds": list(seeds), "evaluate": e.model_dump()}, cache_meta.get("data")
    )
    write_json(metrics_path, report)
    write_json(headline_path, headline(report))
    return report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="folder with <backbone>/seeds/seed<seed>/{val,test}.csv")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json (class list)")
    parser.add_argument("--out", required=True, help="folder for the ensemble's val.csv / test.csv")
    parser.add_argument("--metrics", required=True, help="detail metrics JSON to write")
    parser.add_argument("--headline", required=True, help="headline metrics JSON to write (the DVC metric)")
    cards.add_arguments(parser)
    args = parser.parse_args()
    cfg = load_params()
    meta = read_json(args.cache_meta)
    r = ensemble(
        cfg.backbones,
        cfg.seeds,
        args.predictions,
        meta,
        args.out,
        args.metrics,
        args.headline,
        cfg.evaluate,
        list(cfg.external),
        cfg.hide_lungs,
    )
    cards.write_card_from(args, "ensemble of every run", bool(meta.get("synthetic")))
    print(
        f"ensemble of {len(r['members'])} runs: "
        + " | ".join(f"{s} macro-F1 {r[s]['macro_f1']:.4f}" if r[s] else f"{s}: labels hidden" for s in SCORED_SPLITS)
    )


if __name__ == "__main__":
    main()
