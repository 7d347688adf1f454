"""Stage `ensemble`: the mean of the backbones' probabilities, scored like a backbone."""
from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.config import Evaluate
from stages.lib.errors import UserError, cli
from stages.lib.evaluation import SCORED_SPLITS, average_probabilities, read_predictions, write_and_score
from stages.lib.io import load_params, read_json, write_json
from stages.lib.metrics import headline
from stages.lib import provenance


def ensemble(backbones, predictions_dir: str, cache_meta: dict, out_dir: str, metrics_path: str, headline_path: str,
             e: Evaluate) -> dict:
    """Average the members' per-image probabilities; write predictions and metrics like evaluate."""
    classes = cache_meta["classes"]
    outputs = {split: mean_of_members(backbones, predictions_dir, split, classes) for split in SCORED_SPLITS}
    report = {"members": list(backbones), **write_and_score(outputs, classes, Path(out_dir), e)}
    report["provenance"] = provenance.stamp({"backbones": list(backbones), "evaluate": e.model_dump()},
                                            cache_meta.get("data"))
    write_json(metrics_path, report)
    write_json(headline_path, headline(report))
    return report


def mean_of_members(backbones, predictions_dir: str, split: str, classes):
    """(names, labels, mean probabilities) of one split, refusing members scored on other images."""
    members = [read_predictions(Path(predictions_dir) / b / f"{split}.csv", classes) for b in backbones]
    names, labels, _ = members[0]
    for b, (other_names, other_labels, _) in zip(backbones, members):
        if other_names != names or (other_labels != labels).any():
            raise UserError(f"{predictions_dir}/{b}/{split}.csv lists other images than "
                            f"{predictions_dir}/{backbones[0]}/{split}.csv; rerun evaluate (dvc repro)")
    return names, labels, average_probabilities([p for _, _, p in members])


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="folder with <backbone>/{val,test}.csv")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json (class list)")
    parser.add_argument("--out", required=True, help="folder for the ensemble's val.csv / test.csv")
    parser.add_argument("--metrics", required=True, help="detail metrics JSON to write")
    parser.add_argument("--headline", required=True, help="headline metrics JSON to write (the DVC metric)")
    args = parser.parse_args()
    cfg = load_params()
    r = ensemble(cfg.backbones, args.predictions, read_json(args.cache_meta), args.out, args.metrics, args.headline,
                 cfg.evaluate)
    print(f"ensemble of {len(r['members'])}: " + " | ".join(
        f"{s} macro-F1 {r[s]['macro_f1']:.4f}" if r[s] else f"{s}: labels hidden" for s in SCORED_SPLITS))


if __name__ == "__main__":
    main()
