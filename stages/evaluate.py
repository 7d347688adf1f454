"""Stage `evaluate@<backbone>`: best checkpoint -> metrics/<backbone>.json + per-image predictions."""
from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.errors import cli
from stages.lib.evaluation import evaluate_split, load_model, predict_split
from stages.lib.io import load_params, read_json, write_json, write_text
from stages.lib.training import pick_device

SPLITS = ("val", "test")


def evaluate(backbone: str, cache_dir: str, model_path: str, metrics_path: str, predictions_dir: str,
             batch_size: int) -> dict:
    cache_meta = read_json(Path(cache_dir) / "meta.json")
    model, meta = load_model(model_path, backbone, cache_meta["preprocess"], cache_meta["classes"])
    device = pick_device()
    model.to(device)
    report = {}
    for split in SPLITS:
        names, labels, probs = predict_split(model, cache_dir, split, batch_size, device)
        report[split], csv_text = evaluate_split(names, labels, probs, meta["classes"])
        write_text(Path(predictions_dir) / f"{split}.csv", csv_text)
    report.update(best_epoch=meta["epoch"], epochs_run=meta["epochs_run"])
    write_json(metrics_path, report)
    return report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--predictions", required=True, help="folder for val.csv / test.csv")
    args = parser.parse_args()
    batch_size = int(load_params()["evaluate"]["batch_size"])
    r = evaluate(args.backbone, args.cache, args.model, args.metrics, args.predictions, batch_size)
    print(f"{args.backbone}: val acc {r['val']['accuracy']:.4f} macro-F1 {r['val']['macro_f1']:.4f} | "
          f"test acc {r['test']['accuracy']:.4f} macro-F1 {r['test']['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
