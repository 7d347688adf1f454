"""Figures: pure functions from numbers to matplotlib figures, drawn at the size a journal prints them.

Every figure is 7 in wide (page width) when it is a grid and 3.5 in (one column) when it has one panel a
row; at most three panels a row; no text under 8 pt at that size (`STYLE`); axes shared where values are
compared; one colour per model in every figure (`model_colours`: the Okabe-Ito palette, safe for the
common colour-vision deficiencies, in the order of .dvc/plots/by_model.json, so `dvc plots show` agrees).
Data from a synthetic run gets a SYNTHETIC banner on the figure itself (`save_figure`).

Taken from scikit-learn: `ConfusionMatrixDisplay` (matrix, colour scale, value texts), `RocCurveDisplay`
(curves, chance diagonal), `PrecisionRecallDisplay` (curves, and the prevalence line via
`plot_chance_level`), `CalibrationDisplay` (reliability curve and diagonal; its points are
`calibration_curve`'s uniform bins). Drawn here by hand, because scikit-learn has no display for them:
the legend texts (AUROC [95% CI] and AP from the metrics, not recomputed), the second line of each
confusion cell (the row percentage beside the count), the bin-count histogram under each reliability
curve, the training curves with the best epoch marked, the model comparison (point estimates with
bootstrap CIs, one dot per seed, the study's and the metadata-only shortcut's reference marks), the
Grad-CAM grid (the preprocessed image beside a translucent heatmap, a colour bar) and the banner.
"""
from __future__ import annotations

import functools
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from stages.lib.core.files import atomic_path  # noqa: E402
from stages.lib.core.names import ENSEMBLE  # noqa: E402

PAGE, COLUMN = 7.0, 3.5  # inches: a journal's page and column width
DPI = 300                # print resolution at those widths
# Okabe & Ito (2008), the order of .dvc/plots/by_model.json's range; the ensemble is always black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
ENSEMBLE_COLOUR = "#000000"
HEATMAP = "inferno"      # perceptually uniform, readable in grey scale
HEATMAP_ALPHA = 0.45     # the anatomy stays visible under the map
SYNTHETIC_MARK = "SYNTHETIC DATA: generated images, not chest X-rays"
CURVE_METRICS = (("loss", "loss"), ("macro_f1", "macro-F1"), ("accuracy", "accuracy"))
COMPARED = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("macro_auroc", "macro AUROC"))
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 9, "axes.spines.top": False,
         "axes.spines.right": False, "legend.frameon": False, "lines.linewidth": 1.2, "axes.grid": True,
         "grid.alpha": 0.3, "grid.linewidth": 0.5}


def styled(draw):
    """Run a figure function under STYLE (sizes are fixed when each text is created)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def model_colours(names) -> dict[str, str]:
    """One colour per model: backbones take PALETTE in the order given (params' `backbones`), the
    ensemble black. Pass the same mapping to every figure of a report."""
    backbones = [n for n in names if n != ENSEMBLE]
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(backbones)}
    return {n: colours.get(n, ENSEMBLE_COLOUR) for n in names}


def mark_synthetic(fig) -> None:
    """The banner above every figure made from synthetic data."""
    fig.text(0.5, 1.0, SYNTHETIC_MARK, ha="center", va="bottom", color="#D55E00", fontsize=9, fontweight="bold",
             gid="synthetic")


def save_figure(fig, path: str | os.PathLike, synthetic: bool = False) -> None:
    """Write `fig` as PNG at print resolution (atomically), with the synthetic banner when asked."""
    if synthetic:
        mark_synthetic(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.03,
                    metadata={"Description": SYNTHETIC_MARK if synthetic else "chest X-ray classifier results"})
    plt.close(fig)


def _grid(n: int, panel_height: float, cols: int | None = None, **shared):
    """A figure of n panels, at most three a row: 7 in wide, or 3.5 in with one panel a row."""
    cols = cols or min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE if cols > 1 else COLUMN, panel_height * rows),
                             squeeze=False, layout="constrained", **shared)
    for ax in axes.flat[n:]:
        ax.remove()
    for ax in axes.flat[max(0, n - cols):n]:  # the last panel of a column shows its x tick labels
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, list(axes.flat[:n])


# --- confusion matrices -------------------------------------------------------------------------

@styled
def confusion_grid(matrices: dict[str, np.ndarray], classes, title: str):
    """One panel per model (rows = true class): count and row percentage in each cell, colour = row share.

    `matrices[model]` is the [C, C] count matrix. One shared colour bar (0-100%).
    """
    fig, axes = _grid(len(matrices), 2.75 if len(matrices) > 1 else 3.3)
    for k, (ax, (name, cm)) in enumerate(zip(axes, matrices.items())):
        rows = cm.sum(1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        shown = ConfusionMatrixDisplay(share, display_labels=list(classes)).plot(
            ax=ax, cmap="Blues", colorbar=False, values_format=".0%", xticks_rotation=45,
            im_kw={"vmin": 0, "vmax": 1})
        for (i, j), text in np.ndenumerate(shown.text_):
            text.set_text(f"{cm[i, j]}\n{share[i, j]:.0%}")
        ax.grid(False)
        ax.set_title(name)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k % 3:
            ax.set_yticklabels([])
    _outer_labels(axes, min(len(axes), 3))
    fig.colorbar(ScalarMappable(Normalize(0, 1), "Blues"), ax=axes, shrink=0.6, format="{x:.0%}",
                 label="share of the true class (row)")
    fig.suptitle(title)
    return fig


# --- ROC and precision-recall: one panel per class, one curve per model ---------------------------

def _class_panels(classes):
    return _grid(len(classes), 3.3, cols=min(len(classes), 2), sharex=True, sharey=True)


def _ci_text(ci) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else ""


def _one_vs_rest(outputs, classes, draw, xlabel: str, ylabel: str, legend_title: str):
    """A panel per class; `draw(ax, model, class_index, positive, scores, first)` adds one model's
    curve (`first`: the panel's first curve, which also draws the no-skill reference)."""
    fig, axes = _class_panels(classes)
    for c, (ax, cls) in enumerate(zip(axes, classes)):
        drawn = False
        for name, (labels, probs) in outputs.items():
            positive = labels == c
            if positive.all() or not positive.any():
                continue
            draw(ax, name, c, positive, probs[:, c], not drawn)
            drawn = True
        _class_panel(ax, cls, labels, c, drawn, xlabel, ylabel, legend_title)
    _outer_labels(axes, 2)
    return fig


@styled
def roc_grid(outputs: dict[str, tuple[np.ndarray, np.ndarray]], scores: dict[str, dict], classes,
             class_ci: dict[str, list] | None = None, colours: dict[str, str] | None = None, split: str = "test"):
    """One-vs-rest ROC per class, every model on the same axes, with the chance diagonal.

    `outputs[model] = (labels [N], probs [N, C])`; `scores[model]` is that split's metrics dict (the
    legend prints its `per_class.<class>.auroc`); `class_ci[model][c]` an optional [low, high] 95% CI per
    class (stages.lib.results.metrics.class_auroc_ci95), printed after the AUROC.
    """
    colours = colours or model_colours(outputs)

    def draw(ax, name, c, positive, score, first):
        auroc = scores[name]["per_class"][classes[c]]["auroc"]
        ci = (class_ci or {}).get(name, [None] * len(classes))[c]
        shown = RocCurveDisplay.from_predictions(positive, score, ax=ax, name=name,
                                                 curve_kwargs={"color": colours[name]}, plot_chance_level=first,
                                                 chance_level_kw={"color": "grey", "linestyle": ":",
                                                                  "label": "chance (0.50)"})
        shown.line_.set_label(f"{name} {auroc:.2f}{_ci_text(ci)}")

    fig = _one_vs_rest(outputs, classes, draw, "false positive rate", "true positive rate",
                       "AUROC [95% CI]" if class_ci else "AUROC")
    fig.suptitle(f"ROC, one class vs the rest ({split} split)")
    return fig


@styled
def pr_grid(outputs: dict[str, tuple[np.ndarray, np.ndarray]], scores: dict[str, dict], classes,
            colours: dict[str, str] | None = None, split: str = "test"):
    """One-vs-rest precision-recall per class, every model on the same axes, with the class's
    prevalence (a classifier without skill). Legend: average precision from `scores[model]`."""
    colours = colours or model_colours(outputs)

    def draw(ax, name, c, positive, score, first):
        shown = PrecisionRecallDisplay.from_predictions(
            positive, score, ax=ax, name=name, curve_kwargs={"color": colours[name]}, plot_chance_level=first,
            chance_level_kw={"color": "grey", "linestyle": ":", "label": f"prevalence {positive.mean():.2f}"})
        shown.line_.set_label(f"{name} {scores[name]['per_class'][classes[c]]['average_precision']:.2f}")

    fig = _one_vs_rest(outputs, classes, draw, "recall", "precision", "average precision")
    fig.suptitle(f"Precision-recall, one class vs the rest ({split} split)")
    return fig


def _outer_labels(axes, cols: int) -> None:
    """Axis labels on the left column and the bottom panel of each column only (the axes are shared)."""
    for k, ax in enumerate(axes):
        if k + cols < len(axes):
            ax.set_xlabel("")
        if k % cols:
            ax.set_ylabel("")


def _class_panel(ax, cls, labels, c, drawn, xlabel, ylabel, legend_title):
    ax.set_title(f"{cls} (n={int((labels == c).sum())} of {len(labels)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn:
        lines = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
        reference = [h for h in lines if h.get_linestyle() == ":"]
        ax.legend(handles=[h for h in lines if h not in reference] + reference, title=legend_title, loc="best",
                  handlelength=1.2, borderaxespad=0.3, labelspacing=0.25, frameon=True, framealpha=0.85,
                  edgecolor="none")
    else:
        ax.text(0.5, 0.5, f"undefined: the split has\n{'no' if not (labels == c).any() else 'only'} {cls} images",
                ha="center", va="center", transform=ax.transAxes)


# --- reliability ----------------------------------------------------------------------------------

@styled
def reliability_grid(outputs: dict[str, tuple[np.ndarray, np.ndarray]], scores: dict[str, dict], bins: int,
                     colours: dict[str, str] | None = None, split: str = "test",
                     scaled: dict[str, tuple[float, np.ndarray, float]] | None = None):
    """Per model: accuracy vs mean top-class confidence over `bins` equal-width bins (empty bins have no
    point) and, under it, how many images each bin holds; ECE (from `scores[model]["ece"]`) in the title.
    `scaled[model] = (temperature, temperature-scaled probabilities, their ECE)` adds the curve after
    temperature scaling (dashed, grey) and its ECE to the title; the bars stay those before."""
    colours = colours or model_colours(outputs)
    n = len(outputs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(PAGE if cols > 1 else COLUMN, 2.9 * rows), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
    edges = np.linspace(0, 1, bins + 1)
    first = first_bars = None
    for k, (name, (labels, probs)) in enumerate(outputs.items()):
        r, c = divmod(k, cols)
        top = fig.add_subplot(grid[2 * r, c], sharex=first, sharey=first)
        bottom = fig.add_subplot(grid[2 * r + 1, c], sharex=top, sharey=first_bars)  # counts compare too
        first, first_bars = first or top, first_bars or bottom
        confidence, correct = probs.max(1), probs.argmax(1) == labels
        CalibrationDisplay.from_predictions(correct, confidence, n_bins=bins, strategy="uniform", ax=top, name=name,
                                            color=colours[name], markersize=3)
        top.get_legend().remove()
        top.set(xlabel="", ylabel="accuracy" if c == 0 else "", xlim=(0, 1), ylim=(0, 1), aspect="auto")
        top.tick_params(labelbottom=False)
        top.set_title(f"{name}: ECE {scores[name]['ece']:.3f}")
        if scaled and name in scaled:
            t, after, after_ece = scaled[name]
            CalibrationDisplay.from_predictions(after.argmax(1) == labels, after.max(1), n_bins=bins,
                                                strategy="uniform", ax=top, name=f"T = {t:.2f}", color="0.35",
                                                ref_line=False, linestyle="--", markersize=3)
            top.get_legend().remove()
            top.set(xlabel="", ylabel="accuracy" if c == 0 else "", xlim=(0, 1), ylim=(0, 1), aspect="auto")
            top.set_title(f"{name}: ECE {scores[name]['ece']:.3f}\nafter T = {t:.2f}: {after_ece:.3f}")  # 2 lines: fits
        counts, _ = np.histogram(confidence, bins=edges)
        bottom.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colours[name], alpha=0.6,
                   edgecolor="white", linewidth=0.4)
        bottom.set_xlabel("confidence (top class)")
        bottom.set_ylabel("images" if c == 0 else "")
        bottom.grid(False)
    fig.suptitle(f"Reliability ({split} split): dotted = perfectly calibrated; bars = images per bin"
                 + ("\ndashed grey = after temperature scaling fitted on val" if scaled else ""))
    return fig


# --- training curves ------------------------------------------------------------------------------

@styled
def training_curves(runs: dict[str, list[dict]], best_epochs: dict[str, list] | None = None,
                    colours: dict[str, str] | None = None):
    """Train (top row) and val (bottom row) loss, macro-F1 and accuracy per epoch, every model on the
    same axes; each column shares its y axis, so train and val compare directly.

    `runs[model]` is a list of histories, one per seed: `{split: {metric: [(epoch, value), ...]}}`
    (DVCLive's). `best_epochs[model]` lists each run's best epoch (val macro-F1), marked with a star.
    """
    colours = colours or model_colours(runs)
    best_epochs = best_epochs or {}
    fig, axes = plt.subplots(2, 3, figsize=(PAGE, 4.6), sharex=True, sharey="col", layout="constrained")
    for r, split in enumerate(("train", "val")):
        for c, (metric, label) in enumerate(CURVE_METRICS):
            ax = axes[r][c]
            for name, histories in runs.items():
                alpha = 1.0 if len(histories) == 1 else 0.6
                for h, best in zip(histories, best_epochs.get(name, [None] * len(histories)) or [None]):
                    points = dict(h.get(split, {}).get(metric, []))
                    if not points:
                        continue
                    ax.plot(list(points), list(points.values()), color=colours[name], alpha=alpha, marker="o",
                            markersize=2)
                    if best in points:
                        ax.plot([best], [points[best]], marker="*", markersize=9, color=colours[name],
                                markeredgecolor="black", markeredgewidth=0.5, linestyle="none", zorder=3)
            ax.set_title(f"{split} {label}")
            if r == 1:
                ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    handles = [Line2D([], [], color=colours[n], marker="o", markersize=3, label=n) for n in runs]
    handles.append(Line2D([], [], color="grey", marker="*", markersize=9, markeredgecolor="black",
                          markeredgewidth=0.5, linestyle="none", label="best epoch (val macro-F1)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle("Training curves (shared y axis per column)")
    return fig


def curves_csv(histories: dict[str, dict[str, dict[str, list]]], split: str) -> str:
    """One split's per-epoch metrics of every model in long form (model,epoch,loss,macro_f1,accuracy), so
    one `dvc plots` definition draws any number of models, each in its own colour (.dvc/plots/by_model.json)."""
    metrics = [m for m, _ in CURVE_METRICS]
    lines = ["model,epoch," + ",".join(metrics)]
    for name, history in histories.items():
        values = {m: dict(history.get(split, {}).get(m, [])) for m in metrics}
        for epoch in sorted(set().union(*values.values())):
            lines.append(f"{name},{epoch}," + ",".join(_csv_number(values[m].get(epoch)) for m in metrics))
    return "\n".join(lines) + "\n"


def _csv_number(v) -> str:
    return "" if v is None else repr(float(v))


# --- model comparison -----------------------------------------------------------------------------

@styled
def comparison(scores: dict[str, dict], seeds: dict[str, dict] | None = None,
               study: dict[str, tuple[float, float]] | None = None, shortcut: dict | None = None,
               colours: dict[str, str] | None = None):
    """Accuracy, macro-F1 and macro AUROC per model with 95% bootstrap CIs: one row per scored split
    (val, test), one column per metric, models on a shared y axis, each column on a shared x axis.

    `scores[model][split]` is the split's metrics dict (`<key>` and `<key>_ci95`), None when its labels are
    hidden. Optional, all plain data:
    - `seeds[model][split][key]`: each seed's value (a list); drawn as one open dot per seed when a model
      has more than one, and the caption says how many (or "1 seed").
    - `study[model] = (val accuracy, val macro-F1)`: the study's published numbers, drawn on the val row
      only (the split the study measured them on).
    - `shortcut[split]["macro_f1"]`: the metadata-only classifier's score, a dashed line on macro-F1.
    """
    seeds, study, shortcut = seeds or {}, study or {}, shortcut or {}
    colours = colours or model_colours(scores)
    names = list(scores)
    splits = [s for s in ("val", "test") if any(scores[n].get(s) for n in names)]
    fig, axes = plt.subplots(len(splits), 3, figsize=(PAGE, 0.9 + len(splits) * (0.45 + 0.3 * len(names))),
                             sharey=True, sharex="col", squeeze=False, layout="constrained")
    y = np.arange(len(names))[::-1]  # first model on top
    for r, split in enumerate(splits):
        for c, (key, label) in enumerate(COMPARED):
            ax = axes[r][c]
            for yi, name in zip(y, names):
                m = scores[name].get(split)
                if not m or m.get(key) is None:
                    continue
                low, high = [v if v is not None else m[key] for v in m.get(f"{key}_ci95", (None, None))]
                ax.errorbar(m[key], yi, xerr=[[m[key] - low], [high - m[key]]], fmt="o", color=colours[name],
                            markersize=4, capsize=2, elinewidth=1)
                values = seeds.get(name, {}).get(split, {}).get(key, [])
                if len(values) > 1:
                    ax.plot(values, yi + np.linspace(-0.22, -0.12, len(values)), "o", markersize=3,
                            markerfacecolor="none", color=colours[name], gid="seed")
            ref = 0 if key == "accuracy" else 1 if key == "macro_f1" else None
            if split == "val" and ref is not None and study:
                ax.plot([study[n][ref] if n in study else np.nan for n in names], y + 0.25, "v", color="black",
                        markersize=4, linestyle="none", gid="study")
            if key == "macro_f1" and split in shortcut:
                ax.axvline(shortcut[split]["macro_f1"], color="grey", linestyle="--", linewidth=1, gid="shortcut")
            ax.set_title(f"{split}: {label}")
            ax.grid(axis="y", visible=False)
            ax.set_ylim(-0.6, len(names) - 0.4)
            if r == len(splits) - 1:
                ax.set_xlabel(label)
    axes[0][0].set_yticks(y, names)
    counts = {len(v.get(splits[-1], {}).get("macro_f1", [])) for v in seeds.values()} or {1}
    handles = [Line2D([], [], color="black", marker="o", markersize=4, label="estimate, 95% bootstrap CI")]
    handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", markersize=3, linestyle="none",
                          label=f"each seed (n={max(counts)})") if max(counts) > 1 else
                   Line2D([], [], linestyle="none", label="1 seed: no run-to-run spread"))
    if study:
        handles.append(Line2D([], [], color="black", marker="v", markersize=4, linestyle="none",
                              label="study (published, val)"))
    if any(s in shortcut for s in splits):
        handles.append(Line2D([], [], color="grey", linestyle="--", label="metadata-only shortcut"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    fig.suptitle("Models compared")
    return fig


def figure_captions(shown: str, resamples: int) -> dict[str, tuple[str, str]]:
    """Title and caption of each figure of the report, by file name (docs/figures.md says more)."""
    return {
        "comparison.png": ("Models compared", f"Accuracy, macro-F1 and macro AUROC per model on val and test: dot = "
                           f"estimate, bar = 95% bootstrap CI ({resamples} image resamples); triangles, where shown = "
                           "the study's published val numbers (on val only); dashed = the metadata-only shortcut's "
                           "macro-F1."),
        "confusion_test.png": (f"Confusion matrices, {shown}", "Rows = true class, columns = predicted; each cell "
                               "holds the count and its share of the row (the class's recall on the diagonal)."),
        "confusion_val.png": ("Confusion matrices, val", "As above, on the validation split (used for early "
                              "stopping, so slightly optimistic)."),
        "roc_test.png": (f"ROC curves, {shown}", "One panel per class (that class vs the rest), one curve per model; "
                         "legend: AUROC [95% bootstrap CI]; dotted diagonal = chance."),
        "pr_test.png": (f"Precision-recall curves, {shown}", "One panel per class, one curve per model; legend: "
                        "average precision; dotted line = the class's prevalence (a classifier without skill)."),
        "reliability_test.png": (f"Reliability, {shown}", "Accuracy against the top class's mean confidence in "
                                 "equal-width bins (diagonal = perfectly calibrated); bars under each panel = images "
                                 "per bin; ECE in the title. Dashed grey: after temperature scaling fitted on val "
                                 "(T and the ECE after in the title; docs/calibration.md)."),
        "training_curves.png": ("Training curves", "Loss, macro-F1 and accuracy per epoch on train (top) and val "
                                "(bottom), shared y axis per column; star = the epoch whose weights were kept "
                                "(best val macro-F1)."),
        "gradcam": ("Grad-CAM, {b}", f"Per class, a correct and a misclassified {shown} image (the first of each), "
                                     "the preprocessed image beside the Grad-CAM of the predicted class (none where "
                                     "the network's last feature map is under 7x7: the figure says why)."),
    }


# --- Grad-CAM -------------------------------------------------------------------------------------

@styled
def gradcam_grid(examples: list[list[dict]], title: str, note: str | None = None):
    """Grad-CAM examples, one row per class: each example is the preprocessed image beside the same image
    under the heatmap, captioned. `examples[row]` lists dicts {"image": uint8 [S,S], "heat": float [S,S] in
    [0, 1] or None, "caption": str}. With no heatmaps (`heat` None everywhere) only the images are shown
    and `note` says why; otherwise one colour bar for all."""
    with_heat = any(e["heat"] is not None for row in examples for e in row)
    per_row = max(1, min(max((len(r) for r in examples), default=1), 2 if with_heat else 3))
    # a class without images gets no row
    rows = [row[i:i + per_row] for row in examples for i in range(0, len(row), per_row)]
    fig = plt.figure(figsize=(PAGE, 0.6 + 1.95 * len(rows)), layout="constrained")
    body, bar = fig.subfigures(1, 2, width_ratios=[20, 1.6]) if with_heat else (fig, None)
    cells = body.subfigures(len(rows), per_row, squeeze=False)
    for row, line in zip(cells, rows):
        for cell, example in zip(row, line + [None] * (per_row - len(line))):
            if example is None:
                continue
            axes = cell.subplots(1, 2 if with_heat else 1, squeeze=False)[0]
            for ax in axes:
                ax.imshow(example["image"], cmap="gray", vmin=0, vmax=255)
                ax.set_axis_off()
            if with_heat and example["heat"] is not None:
                axes[1].imshow(example["heat"], cmap=HEATMAP, vmin=0, vmax=1, alpha=HEATMAP_ALPHA)
            cell.suptitle(example["caption"], fontsize=8)
    if bar is not None:
        cax = bar.add_axes((0.1, 0.25, 0.25, 0.5), label="<colorbar>")
        fig.colorbar(ScalarMappable(Normalize(0, 1), HEATMAP), cax=cax,
                     label="Grad-CAM (scaled to each image's maximum)")
    fig.suptitle(title + (f"\n{note}" if note else ""))
    return fig
