"""Per-class curves, one panel per class and one curve per model: ROC, precision-recall and reliability (calibration)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from stages.lib.report.plots import COLUMN, PAGE, model_colours, outer_labels, panel_grid, styled


def _class_panels(classes):
    return panel_grid(len(classes), 3.3, cols=min(len(classes), 2), sharex=True, sharey=True)


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
    outer_labels(axes, 2)
    return fig


@styled
def roc_grid(
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    scores: dict[str, dict],
    classes,
    class_ci: dict[str, list] | None = None,
    colours: dict[str, str] | None = None,
    split: str = "test",
):
    """One-vs-rest ROC per class, every model on the same axes, with the chance diagonal.

    `outputs[model] = (labels [N], probs [N, C])`; `scores[model]` is that split's metrics dict (the
    legend prints its `per_class.<class>.auroc`); `class_ci[model][c]` an optional [low, high] 95% CI per
    class (stages.lib.results.metrics.class_auroc_ci95), printed after the AUROC.
    """
    colours = colours or model_colours(outputs)

    def draw(ax, name, c, positive, score, first):
        auroc = scores[name]["per_class"][classes[c]]["auroc"]
        ci = (class_ci or {}).get(name, [None] * len(classes))[c]
        shown = RocCurveDisplay.from_predictions(
            positive,
            score,
            ax=ax,
            name=name,
            curve_kwargs={"color": colours[name]},
            plot_chance_level=first,
            chance_level_kw={"color": "grey", "linestyle": ":", "label": "chance (0.50)"},
        )
        shown.line_.set_label(f"{name} {auroc:.2f}{_ci_text(ci)}")

    fig = _one_vs_rest(
        outputs, classes, draw, "false positive rate", "true positive rate", "AUROC [95% CI]" if class_ci else "AUROC"
    )
    fig.suptitle(f"ROC, one class vs the rest ({split} split)")
    return fig


@styled
def pr_grid(
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    scores: dict[str, dict],
    classes,
    colours: dict[str, str] | None = None,
    split: str = "test",
):
    """One-vs-rest precision-recall per class, every model on the same axes, with the class's
    prevalence (a classifier without skill). Legend: average precision from `scores[model]`."""
    colours = colours or model_colours(outputs)

    def draw(ax, name, c, positive, score, first):
        shown = PrecisionRecallDisplay.from_predictions(
            positive,
            score,
            ax=ax,
            name=name,
            curve_kwargs={"color": colours[name]},
            plot_chance_level=first,
            chance_level_kw={"color": "grey", "linestyle": ":", "label": f"prevalence {positive.mean():.2f}"},
        )
        shown.line_.set_label(f"{name} {scores[name]['per_class'][classes[c]]['average_precision']:.2f}")

    fig = _one_vs_rest(outputs, classes, draw, "recall", "precision", "average precision")
    fig.suptitle(f"Precision-recall, one class vs the rest ({split} split)")
    return fig


# params: one class's panel: the axes and class, the labels and its index, the curves already drawn, and the
# axis and legend texts.
def _class_panel(ax, cls, labels, c, drawn, xlabel, ylabel, legend_title):
    ax.set_title(f"{cls} (n={int((labels == c).sum())} of {len(labels)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if drawn:
        lines = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
        reference = [h for h in lines if h.get_linestyle() == ":"]
        ax.legend(
            handles=[h for h in lines if h not in reference] + reference,
            title=legend_title,
            loc="best",
            handlelength=1.2,
            borderaxespad=0.3,
            labelspacing=0.25,
            frameon=True,
            framealpha=0.85,
            edgecolor="none",
        )
    else:
        ax.text(
            0.5,
            0.5,
            f"undefined: the split has\n{'no' if not (labels == c).any() else 'only'} {cls} images",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )


def _scaled_curve(
    top, labels: np.ndarray, scaled: tuple[float, np.ndarray, float], bins: int, title: str, first_column: bool
) -> None:
    """The reliability curve after temperature scaling (dashed, grey) over the one before; its ECE in the title
    (none where T = 1: not applied)."""
    t, after, after_ece = scaled
    if t == 1.0:  # not applied (the summary says why): the curve after is the one before
        top.set_title(f"{title}\nT = 1: not applied")
        return
    CalibrationDisplay.from_predictions(
        after.argmax(1) == labels,
        after.max(1),
        n_bins=bins,
        strategy="uniform",
        ax=top,
        name=f"T = {t:.2f}",
        color="0.35",
        ref_line=False,
        linestyle="--",
        markersize=3,
    )
    top.get_legend().remove()
    top.set(xlabel="", ylabel="accuracy" if first_column else "", xlim=(0, 1), ylim=(0, 1), aspect="auto")
    top.set_title(f"{title}\nafter T = {t:.2f}: {after_ece:.3f}")  # 2 lines: fits


def _bin_counts(bottom, confidence: np.ndarray, edges: np.ndarray, colour: str, first_column: bool) -> None:
    """How many images each confidence bin holds, under the curve."""
    counts, _ = np.histogram(confidence, bins=edges)
    bottom.bar(
        edges[:-1],
        counts,
        width=np.diff(edges),
        align="edge",
        color=colour,
        alpha=0.6,
        edgecolor="white",
        linewidth=0.4,
    )
    bottom.set_xlabel("confidence (top class)")
    bottom.set_ylabel("images" if first_column else "")
    bottom.grid(False)


@styled
def reliability_grid(
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    scores: dict[str, dict],
    bins: int,
    colours: dict[str, str] | None = None,
    split: str = "test",
    scaled: dict[str, tuple[float, np.ndarray, float]] | None = None,
):
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
        CalibrationDisplay.from_predictions(
            correct, confidence, n_bins=bins, strategy="uniform", ax=top, name=name, color=colours[name], markersize=3
        )
        top.get_legend().remove()
        top.set(xlabel="", ylabel="accuracy" if c == 0 else "", xlim=(0, 1), ylim=(0, 1), aspect="auto")
        top.tick_params(labelbottom=False)
        top.set_title(f"{name}: ECE {scores[name]['ece']:.3f}")
        if scaled and name in scaled:
            _scaled_curve(top, labels, scaled[name], bins, f"{name}: ECE {scores[name]['ece']:.3f}", c == 0)
        _bin_counts(bottom, confidence, edges, colours[name], c == 0)
    fig.suptitle(
        f"Reliability ({split} split): dotted = perfectly calibrated; bars = images per bin"
        + ("\ndashed grey = after temperature scaling fitted on val" if scaled else "")
    )
    return fig
