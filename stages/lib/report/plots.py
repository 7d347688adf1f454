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
bootstrap CIs, one dot per seed, the study's and both shortcuts' reference marks), the
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
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from stages.lib.core.files import atomic_path  # noqa: E402
from stages.lib.core.names import ENSEMBLE  # noqa: E402
from stages.lib.results.metrics import ci_columns  # noqa: E402

PAGE, COLUMN = 7.0, 3.5  # inches: a journal's page and column width
DPI = 300  # print resolution at those widths
# Okabe & Ito (2008), the order of .dvc/plots/by_model.json's range; the ensemble is always black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
ENSEMBLE_COLOUR = "#000000"
HEATMAP = "inferno"  # perceptually uniform, readable in grey scale
HEATMAP_ALPHA = 0.45  # the anatomy stays visible under the map
SYNTHETIC_MARK = "SYNTHETIC DATA: generated images, not chest X-rays"
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
}


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
    fig.text(
        0.5,
        1.0,
        SYNTHETIC_MARK,
        ha="center",
        va="bottom",
        color="#D55E00",
        fontsize=9,
        fontweight="bold",
        gid="synthetic",
    )


def save_figure(fig, path: str | os.PathLike, synthetic: bool = False) -> None:
    """Write `fig` as PNG at print resolution (atomically), with the synthetic banner when asked."""
    if synthetic:
        mark_synthetic(fig)
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            format="png",
            dpi=DPI,
            bbox_inches="tight",
            pad_inches=0.03,
            metadata={"Description": SYNTHETIC_MARK if synthetic else "chest X-ray classifier results"},
        )
    plt.close(fig)


def panel_grid(n: int, panel_height: float, cols: int | None = None, **shared):
    """A figure of n panels, at most three a row: 7 in wide, or 3.5 in with one panel a row."""
    cols = cols or min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(PAGE if cols > 1 else COLUMN, panel_height * rows),
        squeeze=False,
        layout="constrained",
        **shared,
    )
    for ax in axes.flat[n:]:
        ax.remove()
    for ax in axes.flat[max(0, n - cols) : n]:  # the last panel of a column shows its x tick labels
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, list(axes.flat[:n])


def outer_labels(axes, cols: int) -> None:
    """Axis labels on the left column and the bottom panel of each column only (the axes are shared)."""
    for k, ax in enumerate(axes):
        if k + cols < len(axes):
            ax.set_xlabel("")
        if k % cols:
            ax.set_ylabel("")


# --- confusion matrices -------------------------------------------------------------------------


@styled
def confusion_grid(matrices: dict[str, np.ndarray], classes, title: str):
    """One panel per model (rows = true class): count and row percentage in each cell, colour = row share.

    `matrices[model]` is the [C, C] count matrix. One shared colour bar (0-100%).
    """
    fig, axes = panel_grid(len(matrices), 2.75 if len(matrices) > 1 else 3.3)
    for k, (ax, (name, cm)) in enumerate(zip(axes, matrices.items())):
        rows = cm.sum(1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        shown = ConfusionMatrixDisplay(share, display_labels=list(classes)).plot(
            ax=ax, cmap="Blues", colorbar=False, values_format=".0%", xticks_rotation=45, im_kw={"vmin": 0, "vmax": 1}
        )
        for (i, j), text in np.ndenumerate(shown.text_):
            text.set_text(f"{cm[i, j]}\n{share[i, j]:.0%}")
        ax.grid(False)
        ax.set_title(name)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k % 3:
            ax.set_yticklabels([])
    outer_labels(axes, min(len(axes), 3))
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), "Blues"),
        ax=axes,
        shrink=0.6,
        format="{x:.0%}",
        label="share of the true class (row)",
    )
    fig.suptitle(title)
    return fig


def figure_captions(shown: str, resamples: int) -> dict[str, tuple[str, str]]:
    """Title and caption of each figure of the report, by file name (docs/figures.md says more)."""
    compared = _listed([m.label for m in ci_columns()])  # the models' comparison's panels
    return {
        "comparison.png": (
            "Models compared",
            f"{compared[:1].upper()}{compared[1:]} per model on val and test: dot = "
            f"estimate, bar = 95% bootstrap CI ({resamples} image resamples); triangles, where shown = "
            "the study's published val numbers (on val only); dashed = the metadata-only shortcut's "
            "macro-F1, dotted = the pixel shortcut's (the film outside the lungs only).",
        ),
        "confusion_test.png": (
            f"Confusion matrices, {shown}",
            "Rows = true class, columns = predicted; each cell "
            "holds the count and its share of the row (the class's recall on the diagonal).",
        ),
        "confusion_val.png": (
            "Confusion matrices, val",
            "As above, on the validation split (used for early stopping, so slightly optimistic).",
        ),
        "roc_test.png": (
            f"ROC curves, {shown}",
            "One panel per class (that class vs the rest), one curve per model; "
            "legend: AUROC [95% bootstrap CI]; dotted diagonal = chance.",
        ),
        "pr_test.png": (
            f"Precision-recall curves, {shown}",
            "One panel per class, one curve per model; legend: "
            "average precision; dotted line = the class's prevalence (a classifier without skill).",
        ),
        "reliability_test.png": (
            f"Reliability, {shown}",
            "Accuracy against the top class's mean confidence in "
            "equal-width bins (diagonal = perfectly calibrated); bars under each panel = images "
            "per bin; ECE in the title. Dashed grey: after temperature scaling fitted on val "
            "(T and the ECE after in the title; docs/calibration.md).",
        ),
        "training_curves.png": (
            "Training curves",
            "Loss, macro-F1 and accuracy per epoch on train (top) and val "
            "(bottom), shared y axis per column; star = the epoch whose weights were kept "
            "(best val macro-F1).",
        ),
        "gradcam": (
            "Grad-CAM, {b}",
            f"Per class, a correct and a misclassified {shown} image (the first of each), "
            "the preprocessed image beside the Grad-CAM of the predicted class (none where "
            "the network's last feature map is under 7x7: the figure says why).",
        ),
    }


def _listed(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


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
    rows = [row[i : i + per_row] for row in examples for i in range(0, len(row), per_row)]
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
        fig.colorbar(
            ScalarMappable(Normalize(0, 1), HEATMAP), cax=cax, label="Grad-CAM (scaled to each image's maximum)"
        )
    fig.suptitle(title + (f"\n{note}" if note else ""))
    return fig
