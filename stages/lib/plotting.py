"""Figures and the summary table: pure functions from numbers to matplotlib figures / Markdown."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.lib.io import atomic_path  # noqa: E402

# The reference study's validation results (accuracy, macro-F1), printed beside ours.
STUDY_VAL = {
    "resnet18": (0.818, 0.846),
    "densenet121": (0.838, 0.836),
    "efficientnet_b0": (0.771, 0.798),
    "convnext_tiny": (0.839, 0.837),
}
CURVE_METRICS = (("loss", "Loss"), ("macro_f1", "Macro-F1"), ("accuracy", "Accuracy"))


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_grid(matrices: dict[str, np.ndarray], classes, title: str):
    """One panel per backbone: colour = row-normalised recall, text = counts."""
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_title(name)
    axes[0][0].set_ylabel("true")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, dict[str, dict[str, list]]]):
    """Rows = backbones, columns = loss / macro-F1 / accuracy; train vs val in each panel.

    `histories[backbone][split][metric]` is a list of (epoch, value).
    """
    names = list(histories)
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.8 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c, (metric, label) in enumerate(CURVE_METRICS):
            ax = axes[r][c]
            for split, style in (("train", "--"), ("val", "-")):
                points = histories[name].get(split, {}).get(metric, [])
                if points:
                    epochs, values = zip(*points)
                    ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def comparison_bars(scores: dict[str, dict[str, dict]], split: str):
    """Grouped bars of accuracy / macro P / R / F1 per backbone on `split`, study val F1 as markers."""
    keys = (("accuracy", "accuracy"), ("macro_precision", "macro precision"),
            ("macro_recall", "macro recall"), ("macro_f1", "macro-F1"))
    names = list(scores)
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(names)), 4))
    for k, (key, label) in enumerate(keys):
        values = [scores[n][split][key] for n in names]
        bars = ax.bar(x + (k - 1.5) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    study = [STUDY_VAL.get(n, (np.nan, np.nan))[1] for n in names]
    ax.scatter(x + 1.5 * width, study, marker="_", s=400, color="black", zorder=3, label="study val macro-F1")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Backbones compared ({split} split)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def summary_markdown(scores: dict[str, dict], training: dict[str, dict], classes, synthetic: bool,
                     figures: list[str]) -> str:
    """The study's results table filled with this run's numbers, plus per-class F1 and plot links."""
    lines = ["# Results", ""]
    if synthetic:
        lines += ["> **SYNTHETIC DEMO DATA.** These numbers come from generated images, not chest X-rays:",
                  "> they show the pipeline works and say nothing about medicine.", ""]
    lines += ["| Backbone | Split | Accuracy | Macro precision | Macro recall | Macro-F1 | Best epoch / run | Study val acc / F1 |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in scores.items():
        t = training.get(name, {})
        study = STUDY_VAL.get(name)
        ref = f"{study[0]:.3f} / {study[1]:.3f}" if study else "-"
        for split in ("val", "test"):
            m = s[split]
            lines.append(f"| {name} | {split} | {m['accuracy']:.3f} | {m['macro_precision']:.3f} | "
                         f"{m['macro_recall']:.3f} | {m['macro_f1']:.3f} | "
                         f"{t.get('best_epoch', '-')} / {t.get('epochs_run', '-')} | {ref if split == 'val' else ''} |")
    if scores:
        best = max(scores, key=lambda n: scores[n]["val"]["macro_f1"])
        lines += ["", f"Best by val macro-F1: **{best}** (test macro-F1 {scores[best]['test']['macro_f1']:.3f})."]
    lines += ["", "## Per-class F1 (test)", "",
              "| Backbone | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, s in scores.items():
        pc = s["test"]["per_class"]
        lines.append(f"| {name} | " + " | ".join(f"{pc[c]['f1']:.3f} (n={pc[c]['support']})" for c in classes) + " |")
    lines += ["", "## Plots", ""] + [f"- [{os.path.basename(f)}]({f})" for f in figures] + [""]
    return "\n".join(lines)
