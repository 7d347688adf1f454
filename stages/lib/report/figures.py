"""The report's figures: which results each one shows (every model in the same colour throughout), and
the list the summary embeds, with the Grad-CAM figures evaluate drew, each under its title and caption."""

from __future__ import annotations

import os
from pathlib import Path

from stages.lib.core.names import ENSEMBLE, SCORED_SPLITS, run_name
from stages.lib.params.schema import Config
from stages.lib.report.class_curves import pr_grid, reliability_grid, roc_grid
from stages.lib.report.plots import confusion_grid, figure_captions, model_colours
from stages.lib.report.run_plots import comparison, training_curves
from stages.lib.results import posthoc
from stages.lib.results.metrics import ci_columns, class_auroc_ci95, confusion
from stages.lib.results.model_results import Results, shown_split


def report_figures(cfg: Config, r: Results, fits: dict, study: dict, shortcuts: dict) -> dict:
    """{file name: figure} of the backbones' seed ensembles and the ensemble: the models compared, confusion
    matrices, ROC, precision-recall and reliability per class on the shown split, and the training curves.
    `fits[model]`: its post-hoc fit and blocks (the reliability figure's temperature-scaled curve);
    `shortcuts[name][split]`: each shortcut's metrics, a vertical line on the comparison's macro-F1."""
    shown, e = shown_split(r), cfg.evaluate
    models = [*cfg.backbones, ENSEMBLE]
    outputs = {split: {m: r.outputs[split][m] for m in models} for split in SCORED_SPLITS}
    colours = model_colours(models)  # backbones in params order, then the ensemble: the same in every figure
    class_ci = {n: class_auroc_ci95(*o, e.bootstrap_resamples, e.seed) for n, o in outputs[shown].items()}
    scores = {n: r.scores[n][shown] for n in models}
    runs, best = training_runs(r, cfg.backbones)
    return {
        "comparison.png": comparison(r.scores, seed_points(r.seeds), study, shortcuts, colours),
        "confusion_test.png": _confusions(outputs[shown], r.classes, f"Confusion matrices, {shown} split"),
        "confusion_val.png": _confusions(outputs["val"], r.classes, "Confusion matrices, val split"),
        "roc_test.png": roc_grid(outputs[shown], scores, r.classes, class_ci, colours, shown),
        "pr_test.png": pr_grid(outputs[shown], scores, r.classes, colours, shown),
        "reliability_test.png": reliability_grid(
            outputs[shown], scores, e.calibration_bins, colours, shown, temperature_scaled(fits, outputs[shown], shown)
        ),
        "training_curves.png": training_curves(runs, best, colours),
    }


def _confusions(outputs: dict, classes, title: str):
    matrices = {n: confusion(labels, probs.argmax(1), len(classes)) for n, (labels, probs) in outputs.items()}
    return confusion_grid(matrices, classes, title)


def seed_points(seeds: dict) -> dict:
    """{backbone: {split: {metric: [each seed's value]}}}: one dot per seed in the models' comparison."""
    return {
        b: {
            split: {
                k: [run[split][k] for run in block["runs"].values() if split in run and k in run[split]]
                for k in (m.key for m in ci_columns())
            }
            for split in SCORED_SPLITS
        }
        for b, block in seeds.items()
    }


def training_runs(r: Results, backbones) -> tuple[dict, dict]:
    """Each backbone's DVCLive histories and best epochs, one per seed: one curve and star each."""
    runs = {b: [h for label, h in r.histories.items() if label.split("/")[0] == b] for b in backbones}
    best = {b: [run.get("best_epoch") for run in r.seeds[b]["runs"].values()] for b in backbones}
    return runs, best


def temperature_scaled(fits: dict, outputs: dict, shown: str) -> dict:
    """{model: (T, its temperature-scaled probabilities on `shown`, ECE after)} where its fit scored `shown`."""
    return {
        n: (
            f["temperature"]["value"],
            posthoc.apply(f, outputs[n][1])[0],
            b["temperature"][shown]["ece"]["after"],
        )
        for n, (f, b) in fits.items()
        if shown in b["temperature"]
    }


def figure_links(names, cfg: Config, shown: str, figures_dir: str, gradcam_dir: str, summary_dir: Path) -> list:
    """(path relative to the summary, title, caption) of each figure, then each backbone's Grad-CAM figure."""
    captions = figure_captions(shown, cfg.evaluate.bootstrap_resamples)
    linked = [(Path(figures_dir) / f, *captions[f]) for f in names]
    title, caption = captions["gradcam"]
    linked += [
        (Path(gradcam_dir) / f"{run_name(b, cfg.seeds[0])}.png", title.format(b=b), caption) for b in cfg.backbones
    ]
    return [(os.path.relpath(p, summary_dir), title, caption) for p, title, caption in linked]
