"""Stage `report`: predictions + DVCLive logs -> plots/*.png and metrics/summary.md."""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from stages.lib.errors import UserError, cli
from stages.lib.io import load_params, read_json, write_text
from stages.lib.metrics import classification_metrics, confusion
from stages.lib.plotting import comparison_bars, confusion_grid, save_figure, summary_markdown, training_curves


def read_predictions(path: Path, classes) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices from an evaluate predictions CSV."""
    if not path.is_file():
        raise UserError(f"{path} not found; run the evaluate stage first (dvc repro)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    y_true = np.array([classes.index(r["true_label"]) for r in rows])
    y_pred = np.array([classes.index(r["predicted_label"]) for r in rows])
    return y_true, y_pred


def read_history(live_dir: Path) -> dict[str, dict[str, list]]:
    """{split: {metric: [(epoch, value), ...]}} from DVCLive's per-metric TSV files."""
    history: dict[str, dict[str, list]] = {}
    for tsv in sorted((live_dir / "plots" / "metrics").glob("*/*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        history.setdefault(tsv.parent.name, {})[tsv.stem] = [(int(r["step"]), float(r[tsv.stem])) for r in rows]
    return history


def report(backbones, predictions_dir: str, live_dir: str, cache_meta_path: str, plots_dir: str,
           summary_path: str) -> str:
    meta = read_json(cache_meta_path)
    classes = meta["classes"]
    scores, matrices, histories, training = {}, {"val": {}, "test": {}}, {}, {}
    for name in backbones:
        scores[name] = {}
        for split in ("val", "test"):
            y_true, y_pred = read_predictions(Path(predictions_dir) / name / f"{split}.csv", classes)
            scores[name][split] = classification_metrics(y_true, y_pred, classes)
            matrices[split][name] = confusion(y_true, y_pred, len(classes))
        histories[name] = read_history(Path(live_dir) / name)
        summary = Path(live_dir) / name / "metrics.json"
        training[name] = read_json(summary) if summary.is_file() else {}

    plots = Path(plots_dir)
    figures = {
        "confusion_test.png": confusion_grid(matrices["test"], classes, "Confusion matrices, test split"),
        "confusion_val.png": confusion_grid(matrices["val"], classes, "Confusion matrices, val split"),
        "training_curves.png": training_curves(histories),
        "comparison.png": comparison_bars(scores, "test"),
    }
    for filename, fig in figures.items():
        save_figure(fig, plots / filename)
    links = [os.path.relpath(plots / f, Path(summary_path).parent) for f in figures]
    text = summary_markdown(scores, training, classes, bool(meta.get("synthetic")), links)
    write_text(summary_path, text)
    return text


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="folder with <backbone>/{val,test}.csv")
    parser.add_argument("--live", required=True, help="folder with <backbone>/ DVCLive logs")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json")
    parser.add_argument("--plots", required=True, help="folder for the PNG figures")
    parser.add_argument("--summary", required=True, help="Markdown summary to write")
    args = parser.parse_args()
    backbones = load_params()["train"]["backbones"]
    report(backbones, args.predictions, args.live, args.cache_meta, args.plots, args.summary)
    print(f"wrote {args.summary} and the figures in {args.plots}/")


if __name__ == "__main__":
    main()
