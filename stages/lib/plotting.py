"""Figures and the summary table: pure functions from numbers to matplotlib figures / Markdown."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from stages.lib.evaluation import SCORED_SPLITS  # noqa: E402
from stages.lib.io import atomic_path  # noqa: E402

CURVE_METRICS = (("loss", "Loss"), ("macro_f1", "Macro-F1"), ("accuracy", "Accuracy"))


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _panels(n: int, size: float = 3.6, max_cols: int = 5):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def confusion_grid(matrices: dict[str, np.ndarray], classes, title: str):
    """One panel per model: colour = row-normalised recall, text = count and row percentage."""
    fig, axes = _panels(len(matrices))
    for ax, (name, cm) in zip(axes, matrices.items()):
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
        ax.set_ylabel("true")
        ax.set_title(name)
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


def _per_class_curves(results: dict, classes, curve: str):
    fig, axes = _panels(len(results))
    for ax, (name, (labels, probs)) in zip(axes, results.items()):
        for c, cls in enumerate(classes):
            positive = labels == c
            if positive.all() or not positive.any():
                continue
            if curve == "roc":
                fpr, tpr, _ = roc_curve(positive, probs[:, c])
                ax.plot(fpr, tpr, label=f"{cls} ({np.trapezoid(tpr, fpr):.3f})")
            else:
                precision, recall, _ = precision_recall_curve(positive, probs[:, c])
                ax.step(recall, precision, where="post", label=cls)
        if curve == "roc":
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(fontsize=7, title="class (AUROC)", title_fontsize=7, loc="lower right")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.legend(fontsize=7, loc="lower left")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def roc_grid(results: dict[str, tuple[np.ndarray, np.ndarray]], classes):
    """One-vs-rest ROC curves per class, one panel per model; `results[name] = (labels, probs)`."""
    return _per_class_curves(results, classes, "roc")


def pr_grid(results: dict[str, tuple[np.ndarray, np.ndarray]], classes):
    """One-vs-rest precision-recall curves per class, one panel per model."""
    return _per_class_curves(results, classes, "pr")


def reliability_grid(scores: dict[str, dict], split: str):
    """Reliability diagrams: accuracy vs mean confidence per bin, with each model's ECE."""
    fig, axes = _panels(len(scores))
    for ax, (name, s) in zip(axes, scores.items()):
        bins = [b for b in s[split]["reliability"] if b["count"]]
        centers = [(b["bin_low"] + b["bin_high"]) / 2 for b in bins]
        width = bins[0]["bin_high"] - bins[0]["bin_low"] if bins else 0.1
        ax.bar(centers, [b["accuracy"] for b in bins], width=width, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="darkred",
                markersize=3, label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top class)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {s[split]['ece']:.3f}")
    fig.tight_layout()
    return fig


def comparison_bars(scores: dict[str, dict[str, dict]], split: str, study: dict[str, tuple[float, float]]):
    """Accuracy, macro-F1 and macro AUROC per model with 95% bootstrap CIs; `study` val F1 as markers."""
    keys = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("macro_auroc", "macro AUROC"))
    names = list(scores)
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(names)), 4))
    for k, (key, label) in enumerate(keys):
        values = np.array([_num(scores[n][split][key]) for n in names])
        ci = np.array([[_num(v) for v in scores[n][split][f"{key}_ci95"]] for n in names])
        err = np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))
        bars = ax.bar(x + (k - 1) * width, values, width, yerr=np.nan_to_num(err), capsize=3, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, label_type="center", color="white")
    if study:
        ax.scatter(x, [study.get(n, (np.nan, np.nan))[1] for n in names], marker="_", s=600, color="black",
                   zorder=3, label="study val macro-F1")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Models compared on the {split} split (error bars: 95% bootstrap CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def gradcam_grid(panels: list[np.ndarray], titles: list[str], title: str, cols: int = 4):
    """RGB overlays in a grid with one caption each."""
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel, caption in zip(axes.flat, panels, titles):
        ax.imshow(panel)
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _with_ci(m: dict, key: str) -> str:
    low, high = m.get(f"{key}_ci95", (None, None))
    return f"{_fmt(m[key])} [{_fmt(low)}, {_fmt(high)}]"


def shortcut_lines(scores: dict[str, dict], shortcut: dict, split: str) -> list[str]:
    """The metadata-only baseline beside the networks, and a loud line for each that does not beat it.

    "Clearly" means the network's 95% CI for macro-F1 stays above the baseline's point estimate.
    """
    if split not in shortcut:
        return []
    base = shortcut[split]["macro_f1"]
    recall = ", ".join(f"{c} {r:.2f}" for c, r in shortcut[split]["per_class_recall"].items())
    lines = ["## Shortcut audit", "",
             f"A random forest that sees only file metadata ({', '.join(shortcut.get('features', []))}), no pixels, "
             f"reaches {split} macro-F1 **{base:.3f}** (recall per class: {recall}). Scores near it may come from "
             f"how the images were stored rather than from what they show.", ""]
    for name, s in scores.items():
        m = s[split]
        if m is None:
            continue
        low = m["macro_f1_ci95"][0]
        if low is None or low <= base:
            lines.append(f"> **WARNING: {name} does not clearly beat the metadata-only shortcut** ({split} macro-F1 "
                         f"{_with_ci(m, 'macro_f1')} vs {base:.3f}).")
    return lines + [""]


def summary_markdown(scores: dict[str, dict], training: dict[str, dict], classes, synthetic: bool,
                     figures: list[str], study: dict[str, tuple[float, float]], shortcut: dict | None = None,
                     shown: str = "test") -> str:
    """The report a user pastes into a paper: the study's table with CIs, per-class table, shortcut
    audit, links. `study` holds the study's val (accuracy, macro-F1) per backbone, shown in a last
    column when not empty; `shown` is the split of the per-class table (val when test labels are hidden)."""
    lines = ["# Results", ""]
    if synthetic:
        lines += ["> **SYNTHETIC DEMO DATA.** These numbers come from generated images, not chest X-rays:",
                  "> they show the pipeline works and say nothing about medicine.", ""]
    lines += ["Point estimates with 95% bootstrap confidence intervals (resampling images).", "",
              "| Model | Split | Accuracy [95% CI] | Macro precision | Macro recall | Macro-F1 [95% CI] | "
              "Macro AUROC [95% CI] | ECE | Best epoch / run |" + (" Study val acc / F1 |" if study else ""),
              "|---|---|---|---:|---:|---|---|---:|---:|" + ("---:|" if study else "")]
    for name, s in scores.items():
        t = training.get(name, {})
        ref = f"{study[name][0]:.3f} / {study[name][1]:.3f}" if name in study else "-"
        for split in SCORED_SPLITS:
            m = s[split]
            if m is None:
                lines.append(f"| {name} | {split} | labels hidden | | | | | | |" + (" |" if study else ""))
                continue
            lines.append(
                f"| {name} | {split} | {_with_ci(m, 'accuracy')} | {_fmt(m['macro_precision'])} | "
                f"{_fmt(m['macro_recall'])} | {_with_ci(m, 'macro_f1')} | {_with_ci(m, 'macro_auroc')} | "
                f"{_fmt(m['ece'])} | {t.get('best_epoch', '-')} / {t.get('epochs_run', '-')} |"
                + (f" {ref if split == 'val' else ''} |" if study else ""))
    if scores:
        best = max(scores, key=lambda n: scores[n]["val"]["macro_f1"])
        lines += ["", f"Best by val macro-F1: **{best}** ({shown} macro-F1 {_with_ci(scores[best][shown], 'macro_f1')})."]
    lines += ["", f"## Per class ({shown})", "", "Precision / recall / F1 / AUROC (support).", "",
              "| Model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, s in scores.items():
        pc = s[shown]["per_class"]
        lines.append(f"| {name} | " + " | ".join(
            f"{_fmt(pc[c]['precision'], 2)} / {_fmt(pc[c]['recall'], 2)} / {_fmt(pc[c]['f1'], 2)} / "
            f"{_fmt(pc[c]['auroc'], 2)} (n={pc[c]['support']})" for c in classes) + " |")
    lines += [""] + shortcut_lines(scores, shortcut or {}, shown)
    lines += ["## Plots", ""] + [f"- [{os.path.basename(f)}]({f})" for f in figures] + [""]
    return "\n".join(lines)
