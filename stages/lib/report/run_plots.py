"""The runs' own figures: training curves from DVCLive (and their CSV) and the models' comparison with CIs."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from stages.lib.core.names import PIXEL_SHORTCUT, SHORTCUT  # noqa: E402
from stages.lib.report.plots import PAGE, model_colours, styled  # noqa: E402
from stages.lib.results.metrics import METRICS, ci_columns  # noqa: E402

# What training logs each epoch (DVCLive, train/<key> and val/<key>), in the curves' order; a metric's name
# as the registry says it.
CURVE_METRICS = tuple((k, METRICS[k].label if k in METRICS else k) for k in ("loss", "macro_f1", "accuracy"))

SHORTCUT_LINES = {
    SHORTCUT: ("--", "metadata-only shortcut"),
    PIXEL_SHORTCUT: (":", "pixel shortcut (outside the lungs)"),
}


@styled
def training_curves(
    runs: dict[str, list[dict]], best_epochs: dict[str, list] | None = None, colours: dict[str, str] | None = None
):
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
                    ax.plot(
                        list(points), list(points.values()), color=colours[name], alpha=alpha, marker="o", markersize=2
                    )
                    if best in points:
                        ax.plot(
                            [best],
                            [points[best]],
                            marker="*",
                            markersize=9,
                            color=colours[name],
                            markeredgecolor="black",
                            markeredgewidth=0.5,
                            linestyle="none",
                            zorder=3,
                        )
            ax.set_title(f"{split} {label}")
            if r == 1:
                ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    handles = [Line2D([], [], color=colours[n], marker="o", markersize=3, label=n) for n in runs]
    handles.append(
        Line2D(
            [],
            [],
            color="grey",
            marker="*",
            markersize=9,
            markeredgecolor="black",
            markeredgewidth=0.5,
            linestyle="none",
            label="best epoch (val macro-F1)",
        )
    )
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


@dataclass
class _Compared:
    """What the comparison figure shows, as `comparison` receives it (models top to bottom at `y`)."""

    names: list[str]
    y: np.ndarray
    scores: dict[str, dict]
    seeds: dict[str, dict]
    study: dict[str, tuple[float, float]]
    shortcuts: dict
    colours: dict[str, str]


def _compared_panel(ax, shown: _Compared, split: str, key: str, label: str, last_row: bool) -> None:
    """One split's one metric: each model's estimate with its CI and seeds, the study's and the shortcut's marks."""
    for yi, name in zip(shown.y, shown.names):
        m = shown.scores[name].get(split)
        if not m or m.get(key) is None:
            continue
        low, high = [v if v is not None else m[key] for v in m.get(f"{key}_ci95", (None, None))]
        ax.errorbar(
            m[key],
            yi,
            xerr=[[m[key] - low], [high - m[key]]],
            fmt="o",
            color=shown.colours[name],
            markersize=4,
            capsize=2,
            elinewidth=1,
        )
        values = shown.seeds.get(name, {}).get(split, {}).get(key, [])
        if len(values) > 1:
            ax.plot(
                values,
                yi + np.linspace(-0.22, -0.12, len(values)),
                "o",
                markersize=3,
                markerfacecolor="none",
                color=shown.colours[name],
                gid="seed",
            )
    ref = 0 if key == "accuracy" else 1 if key == "macro_f1" else None
    if split == "val" and ref is not None and shown.study:
        ax.plot(
            [shown.study[n][ref] if n in shown.study else np.nan for n in shown.names],
            shown.y + 0.25,
            "v",
            color="black",
            markersize=4,
            linestyle="none",
            gid="study",
        )
    for name, s in shown.shortcuts.items():
        if key == "macro_f1" and split in s:
            ax.axvline(s[split]["macro_f1"], color="grey", linestyle=SHORTCUT_LINES[name][0], linewidth=1, gid=name)
    ax.set_title(f"{split}: {label}")
    ax.grid(axis="y", visible=False)
    ax.set_ylim(-0.6, len(shown.names) - 0.4)
    if last_row:
        ax.set_xlabel(label)


def _compared_legend(fig, shown: _Compared, splits: list[str]) -> None:
    counts = {len(v.get(splits[-1], {}).get("macro_f1", [])) for v in shown.seeds.values()} or {1}
    handles = [Line2D([], [], color="black", marker="o", markersize=4, label="estimate, 95% bootstrap CI")]
    handles.append(
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markerfacecolor="none",
            markersize=3,
            linestyle="none",
            label=f"each seed (n={max(counts)})",
        )
        if max(counts) > 1
        else Line2D([], [], linestyle="none", label="1 seed: no run-to-run spread")
    )
    if shown.study:
        handles.append(
            Line2D([], [], color="black", marker="v", markersize=4, linestyle="none", label="study (published, val)")
        )
    for name, s in shown.shortcuts.items():
        if any(split in s for split in splits):
            style, label = SHORTCUT_LINES[name]
            handles.append(Line2D([], [], color="grey", linestyle=style, label=label))
    fig.legend(handles=handles, loc="outside lower center", ncols=2)


@styled
def comparison(
    scores: dict[str, dict],
    seeds: dict[str, dict] | None = None,
    study: dict[str, tuple[float, float]] | None = None,
    shortcuts: dict | None = None,
    colours: dict[str, str] | None = None,
):
    """The tabled metrics with a CI (metrics.ci_columns: accuracy, macro-F1, macro AUROC) per model with 95%
    bootstrap CIs: one row per scored split (val, test), one column per metric, models on a shared y axis,
    each column on a shared x axis.

    `scores[model][split]` is the split's metrics dict (`<key>` and `<key>_ci95`), None when its labels are
    hidden. Optional, all plain data:
    - `seeds[model][split][key]`: each seed's value (a list); drawn as one open dot per seed when a model
      has more than one, and the caption says how many (or "1 seed").
    - `study[model] = (val accuracy, val macro-F1)`: the study's published numbers, drawn on the val row
      only (the split the study measured them on).
    - `shortcuts[name][split]["macro_f1"]`: each shortcut's score, a grey line on macro-F1 (the metadata-only
      classifier's dashed, the pixel shortcut's dotted).
    """
    names = list(scores)
    shown = _Compared(
        names,
        np.arange(len(names))[::-1],
        scores,
        seeds or {},
        study or {},
        shortcuts or {},
        colours or model_colours(scores),
    )  # first model on top
    splits = [s for s in ("val", "test") if any(scores[n].get(s) for n in names)]
    metrics = ci_columns()  # one column each
    fig, axes = plt.subplots(
        len(splits),
        len(metrics),
        figsize=(PAGE, 0.9 + len(splits) * (0.45 + 0.3 * len(names))),
        sharey=True,
        sharex="col",
        squeeze=False,
        layout="constrained",
    )
    for r, split in enumerate(splits):
        for c, metric in enumerate(metrics):
            _compared_panel(axes[r][c], shown, split, metric.key, metric.label, r == len(splits) - 1)
    axes[0][0].set_yticks(shown.y, names)
    _compared_legend(fig, shown, splits)
    fig.suptitle("Models compared")
    return fig
