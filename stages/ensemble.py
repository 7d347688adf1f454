"""Stage `ensemble`: the mean of the backbones' probabilities, scored like a backbone."""
from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.errors import UserError, cli
from stages.lib.evaluation import SCORED_SPLITS, average_probabilities, predictions_csv, read_predictions, score_split
from stages.lib.io import load_params, read_json, write_json, write_text
from stages.lib.metrics import headline
from stages.lib import provenance

def ensemble(backbones, predictions_dir: str, cache_meta: dict, out_dir: str, metrics_path: str, headline_path: str,
             e: dict) -> dict:
    """Average the members' per-image probabilities; write predictions and metrics like evaluate."""
    classes = cache_meta["classes"]
    report = {"members": list(backbones)}
    for split in SCORED_SPLITS:
        members = [read_predictions(Path(predictions_dir) / b / f"{split}.csv", classes) for b in backbones]
        names, labels, _ = members[0]
        for b, (other_names, other_labels, _) in zip(backbones, members):
            if other_names != names or (other_labels != labels).any():
                raise UserError(f"{predictions_dir}/{b}/{split}.csv lists other images than "
                                f"{predictions_dir}/{backbones[0]}/{split}.csv; rerun evaluate (dvc repro)")
        probs = average_probabilities([p for _, _, p in members])
        write_text(Path(out_dir) / f"{split}.csv", predictions_csv(names, labels, probs, classes))
        report[split] = score_split(labels, probs, classes, e)
        if report[split] is None:
            report[f"{split}_note"] = "labels hidden: predictions written, not scored"
    report["provenance"] = provenance.stamp({"backbones": list(backbones), "evaluate": e}, cache_meta.get("data"))
    write_json(metrics_path, report)
    write_json(headline_path, headline(report))
    return report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="folder with <backbone>/{val,test}.csv")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json (class list)")
    parser.add_argument("--out", required=True, help="folder for the ensemble's val.csv / test.csv")
    parser.add_argument("--metrics", required=True, help="detail metrics JSON to write")
    parser.add_argument("--headline", required=True, help="headline metrics JSON to write (the DVC metric)")
    args = parser.parse_args()
    params = load_params()
    r = ensemble(params["train"]["backbones"], args.predictions, read_json(args.cache_meta), args.out, args.metrics,
                 args.headline, params["evaluate"])
    print(f"ensemble of {len(r['members'])}: " + " | ".join(
        f"{s} macro-F1 {r[s]['macro_f1']:.4f}" if r[s] else f"{s}: labels hidden" for s in SCORED_SPLITS))


if __name__ == "__main__":
    main()
