"""Stage `report`: predictions + DVCLive logs -> figures (PNG), per-epoch curves (CSV for `dvc plots`),
metrics/summary.md and the same as one self-contained HTML file.

The numbers are recomputed from the per-image predictions with the same function evaluate uses
(`score_split`, seeded bootstrap), so they match metrics/<model>.json exactly; reading those
JSON files instead would need a dependency on metrics/, where this stage writes summary.md.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from stages.lib.config import STUDY_CLASSES, Config
from stages.lib.data import UNLABELED
from stages.lib.errors import cli
from stages.lib.evaluation import SCORED_SPLITS, read_predictions, score_split
from stages.lib.io import load_params, read_json, write_text
from stages.lib.html_report import html_report
from stages.lib.metrics import class_auroc_ci95, confusion
from stages.lib.models import BACKBONES
from stages.lib.plotting import (comparison, confusion_grid, curves_csv, figure_captions, model_colours, pr_grid,
                                 reliability_grid, roc_grid, save_figure, training_curves)
from stages.lib.summary import summary_markdown
from stages.lib import provenance


def read_history(live_dir: Path) -> dict[str, dict[str, list]]:
    """{split: {metric: [(epoch, value), ...]}} from DVCLive's per-metric TSV files."""
    history: dict[str, dict[str, list]] = {}
    for tsv in sorted((live_dir / "plots" / "metrics").glob("*/*.tsv")):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        history.setdefault(tsv.parent.name, {})[tsv.stem] = [(int(r["step"]), float(r[tsv.stem])) for r in rows]
    return history


def report(backbones, predictions_dir: str, ensemble_dir: str, live_dir: str, cache_meta_path: str,
           data_report_path: str, figures_dir: str, curves_dir: str, gradcam_dir: str, summary_path: str,
           html_path: str, cfg: Config) -> str:
    meta = read_json(cache_meta_path)
    classes = meta["classes"]
    sources = {name: Path(predictions_dir) / name for name in backbones}
    sources["ensemble"] = Path(ensemble_dir)
    scores, outputs = {}, {split: {} for split in SCORED_SPLITS}
    for name, folder in sources.items():
        scores[name] = {}
        for split in SCORED_SPLITS:
            _, labels, probs = read_predictions(folder / f"{split}.csv", classes)
            known = labels != UNLABELED
            outputs[split][name] = (labels[known], probs[known])
            scores[name][split] = score_split(labels, probs, classes, cfg.evaluate)
    # Figures show the test split, or val when test labels are hidden.
    shown = "test" if all(s["test"] is not None for s in scores.values()) else "val"
    histories = {name: read_history(Path(live_dir) / name) for name in backbones}
    training = {name: read_json(Path(live_dir) / name / "metrics.json") for name in backbones
                if (Path(live_dir) / name / "metrics.json").is_file()}
    # The study's val numbers are comparable only over its four classes.
    study = {name: BACKBONES[name].study_val for name in backbones
             if BACKBONES[name].study_val and tuple(classes) == STUDY_CLASSES}

    colours = model_colours(scores)  # backbones in params order, then the ensemble: the same in every figure
    shortcut = read_json(data_report_path).get("shortcut", {})
    e = cfg.evaluate
    class_ci = {n: class_auroc_ci95(*o, e.bootstrap_resamples, e.seed) for n, o in outputs[shown].items()}
    shown_scores = {n: s[shown] for n, s in scores.items()}
    figures = {
        "comparison.png": comparison(scores, study=study, shortcut=shortcut, colours=colours),
        "confusion_test.png": confusion_grid(
            {n: confusion(*_labels_preds(o), len(classes)) for n, o in outputs[shown].items()}, classes,
            f"Confusion matrices, {shown} split"),
        "confusion_val.png": confusion_grid(
            {n: confusion(*_labels_preds(o), len(classes)) for n, o in outputs["val"].items()}, classes,
            "Confusion matrices, val split"),
        "roc_test.png": roc_grid(outputs[shown], shown_scores, classes, class_ci, colours, shown),
        "pr_test.png": pr_grid(outputs[shown], shown_scores, classes, colours, shown),
        "reliability_test.png": reliability_grid(outputs[shown], shown_scores, e.calibration_bins, colours, shown),
        "training_curves.png": training_curves({n: [h] for n, h in histories.items()},
                                               {n: [training.get(n, {}).get("best_epoch")] for n in histories},
                                               colours),
    }
    synthetic = bool(meta.get("synthetic"))
    for filename, fig in figures.items():
        save_figure(fig, Path(figures_dir) / filename, synthetic)
    for split in ("train", "val"):  # `dvc plots show` draws these, one colour per model (dvc.yaml's plots)
        write_text(Path(curves_dir) / f"{split}.csv", curves_csv(histories, split))
    captions = figure_captions(shown, e.bootstrap_resamples)
    embedded = [(Path(figures_dir) / f, *captions[f]) for f in figures]
    embedded += [(Path(gradcam_dir) / f"{b}.png", *captions["gradcam"]) for b in backbones]
    embedded = [(os.path.relpath(p, Path(summary_path).parent), title.format(b=p.stem), caption)
                for p, title, caption in embedded]
    text = summary_markdown(scores, training, classes, synthetic, embedded, study, shortcut, shown)
    text += "\n".join(provenance.markdown(provenance.stamp(cfg.model_dump(exclude_none=True), meta.get("data"))))
    write_text(summary_path, text)
    write_text(html_path, html_report(text, Path(summary_path).parent, "CXR-4 results"))
    return text


def _labels_preds(output):
    labels, probs = output
    return labels, probs.argmax(1)


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="folder with <backbone>/{val,test}.csv")
    parser.add_argument("--ensemble", required=True, help="folder with the ensemble's {val,test}.csv")
    parser.add_argument("--live", required=True, help="folder with <backbone>/ DVCLive logs")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json")
    parser.add_argument("--data-report", required=True, help="preprocess's data report (shortcut audit)")
    parser.add_argument("--figures", required=True, help="folder for the PNG figures")
    parser.add_argument("--curves", required=True, help="folder for the per-epoch curves (train.csv, val.csv)")
    parser.add_argument("--gradcam", required=True, help="folder of the Grad-CAM figures (embedded, not written)")
    parser.add_argument("--summary", required=True, help="Markdown summary to write")
    parser.add_argument("--html", required=True, help="the summary as one self-contained HTML file to write")
    args = parser.parse_args()
    cfg = load_params()
    report(cfg.backbones, args.predictions, args.ensemble, args.live, args.cache_meta,
           args.data_report, args.figures, args.curves, args.gradcam, args.summary, args.html, cfg)
    print(f"wrote {args.summary}, {args.html} and the figures in {args.figures}/")


if __name__ == "__main__":
    main()
