"""metrics/summary.md: the results section of a paper, as Markdown that renders on GitHub.

One table per split with 95% CIs (a column per tabled metric, metrics.table_columns) and the two shortcuts
(file metadata only, the film outside the lungs only) as rows beside the models, the shortcut audit's
verdict against the stronger of them, the report stage's further sections (summary_sections.py), the
per-class table, then every figure embedded with its caption; the data's sources and the links to the
model cards with their OOD flags are sections too. html.py turns the same text into one HTML file.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.lib.core.files import read_json
from stages.lib.core.names import ENSEMBLE, PIXEL_SHORTCUT, SHORTCUT, run_name
from stages.lib.report.phrases import absent_lines, fmt, images, with_ci
from stages.lib.report.plots import SYNTHETIC_MARK
from stages.lib.results.comparisons import beats, sentence, stronger
from stages.lib.results.metrics import ci_columns, table_columns

SPLIT_NAMES = {"val": "Validation", "test": "Test"}
# Each shortcut's row label in the split tables.
SHORTCUT_ROWS = {
    SHORTCUT: "*metadata only, no pixels (shortcut audit)*",
    PIXEL_SHORTCUT: "*outside the lungs only (pixel shortcut)*",
}


def split_table(
    scores: dict[str, dict],
    training: dict[str, dict],
    split: str,
    study: dict[str, tuple[float, float]],
    shortcuts: dict,
) -> list[str]:
    """One split's table: a row per model (each tabled metric, with its CI where it has one, then ECE and the
    epochs), then each shortcut (`shortcuts[name][split]`: its metrics, or only its macro-F1: the metrics
    with a CI only); the study's numbers in a last column on val only (the split the study reported)."""
    with_study = bool(study) and split == "val"
    columns, with_ci_only = table_columns(), ci_columns()
    scored = [s[split] for s in scores.values() if s[split] is not None]
    size = f" ({images(scored[0])} images)" if scored else ""
    lines = [
        f"## {SPLIT_NAMES[split]} split{size}",
        "",
        "| Model | "
        + " | ".join(f"{c.title} [95% CI]" if c.batch else c.title for c in columns)
        + " | ECE | Best epoch / run |"
        + (" Study acc / F1 |" if with_study else ""),
        "|---|"
        + "".join("---|" if c.batch else "---:|" for c in columns)
        + "---:|---:|"
        + ("---:|" if with_study else ""),
    ]
    for name, s in scores.items():
        m, t = s[split], training.get(name, {})
        ref = " " + (f"{study[name][0]:.3f} / {study[name][1]:.3f}" if name in study else "-") + " |"
        if m is None:
            lines.append(f"| {name} | labels hidden |" + " |" * (len(columns) + 1) + (ref if with_study else ""))
            continue
        cells = [with_ci(m, c.key) if c.batch else fmt(m[c.key], c.digits) for c in columns]
        cells += [fmt(m["ece"]), f"{t.get('best_epoch', '-')} / {t.get('epochs_run', '-')}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |" + (ref if with_study else ""))
    for name, label in SHORTCUT_ROWS.items():
        m = (shortcuts.get(name) or {}).get(split)
        if m:
            cells = [
                with_ci(m, c.key) if f"{c.key}_ci95" in m else fmt(m[c.key], c.digits) if c.key in m else ""
                for c in with_ci_only
            ]
            cells += [""] * (len(columns) - len(with_ci_only) + 2 + with_study)
            lines.append("|" + "|".join(f" {c} " if c else " " for c in [label, *cells]) + "|")
    return lines + [""] + (absent_lines(scored[0], split) if scored else [])


def _recalls(m: dict) -> dict:
    """Recall per class present: the data report's `per_class_recall`, or a metrics dict's per-class recall."""
    if "per_class_recall" in m:
        return m["per_class_recall"]
    return {c: v["recall"] for c, v in m["per_class"].items() if v.get("support")}


def shortcut_lines(scores: dict[str, dict], shortcuts: dict, split: str, versus: dict | None = None) -> list[str]:
    """Both shortcuts beside the networks, and a loud line for each model that does not beat the stronger.

    `shortcuts[name]`: {split: its metrics, "about": what it sees}; `versus[model][name]`: the paired
    comparison model − that shortcut on macro-F1 (comparisons.paired_difference); "beats" is
    comparisons.beats, the one rule README and docs use too. A model not compared is not said to beat it.
    """
    present = {n: s for n, s in shortcuts.items() if (s or {}).get(split)}
    best = stronger({n: s[split]["macro_f1"] for n, s in present.items()})
    if best is None:
        return []
    versus = versus or {}
    lines = ["## Shortcut audit", "", "Classifiers that cannot read the lungs, fitted on the same train films:", ""]
    for name, s in present.items():
        recall = ", ".join(f"{c} {r:.2f}" for c, r in _recalls(s[split]).items())
        lines.append(
            f"- `{name}`: {s.get('about', name)}. Its {split} macro-F1: **{s[split]['macro_f1']:.3f}** (recall "
            f"per class: {recall})."
        )
    base = present[best][split]["macro_f1"]
    lines += [
        "",
        f"The stronger, `{best}` ({base:.3f}), is the floor: a score near it may come from how the films were "
        "stored or from what lies outside the lungs rather than from the lungs. A model beats it when the "
        "paired 95% CI of its difference on the same images lies above 0.",
        "",
    ]
    for name, s in scores.items():
        compared = (versus.get(name) or {}).get(best)
        if s[split] is None or (compared is not None and beats(compared)):
            continue
        said = sentence(name, best, "macro_f1", compared) if compared is not None else "not compared"
        lines += [
            f"> **WARNING: {name} does not clearly beat the stronger shortcut, `{best}`** ({split} macro-F1 "
            f"{with_ci(s[split], 'macro_f1')} vs {base:.3f}; paired: {said}).",
            "",
        ]  # one quote each
    return lines


def per_class_table(scores: dict[str, dict], classes, split: str) -> list[str]:
    lines = [
        f"## Per class ({split})",
        "",
        "| Model | Class | Precision | Recall | F1 | AUROC | Average precision | Images |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in scores.items():
        for cls in classes:
            pc = s[split]["per_class"][cls]
            if pc.get("absent"):
                lines.append(f"| {name} | {cls} | {pc['note']} | | | | | 0 |")
                continue
            lines.append(
                f"| {name} | {cls} | {fmt(pc['precision'])} | {fmt(pc['recall'])} | {fmt(pc['f1'])} | "
                f"{fmt(pc['auroc'])} | {fmt(pc.get('average_precision'))} | {pc['support']} |"
            )
    return lines + [""]


def figure_lines(figures: list[tuple[str, str, str]]) -> list[str]:
    """Each figure embedded (a relative link GitHub renders) under its title, its caption below."""
    lines = ["## Figures", ""]
    for path, title, caption in figures:
        lines += [f"### {title}", "", f"![{title}]({path})", "", caption, ""]
    return lines


# params: the results report.py collected (scores, training, figures, study, shortcuts, comparisons) and how to
# show them (classes, synthetic, split, sections).
def summary_markdown(
    scores: dict[str, dict],
    training: dict[str, dict],
    classes,
    synthetic: bool,
    figures: list[tuple[str, str, str]],
    study: dict[str, tuple[float, float]],
    shortcuts: dict | None = None,
    shown: str = "test",
    sections: list[str] | None = None,
    versus_shortcut: dict | None = None,
) -> str:
    """The results section: tables per split with CIs, shortcut audit, further sections, per class, figures.

    `scores[model][split]`: the split's metrics dict (None when its labels are hidden); `training[model]`:
    best_epoch and epochs_run; `figures`: (path relative to the summary, title, caption); `study[model] =
    (val accuracy, val macro-F1)`; `shortcuts[name]`: each shortcut's {split: metrics, "about": what it
    sees}; `shown`: the split of the per-class table and the verdicts (val when test labels are hidden);
    `sections`: ready Markdown lines (the report stage's further sections: summary_sections.py, the data's
    sources, the model cards), placed after the shortcut audit; `versus_shortcut[model][name]`: each model's paired macro-F1 comparison with each
    shortcut, which decides the audit's warnings.
    """
    shortcuts = shortcuts or {}
    lines = ["# Results", ""]
    if synthetic:
        lines += [
            f"> **{SYNTHETIC_MARK.upper()}.** These numbers come from generated images: they show "
            "the pipeline works and say nothing about medicine.",
            "",
        ]
    lines += [
        "Point estimates with 95% bootstrap confidence intervals (resampling the split's images). "
        f"`{ENSEMBLE}` averages every run's probabilities. A model whose interval reaches the stronger "
        "shortcut's row has not shown that it reads the lungs.",
        "",
    ]
    for split in SPLIT_NAMES:
        lines += split_table(scores, training, split, study, shortcuts)
    if scores:
        best = max(scores, key=lambda n: scores[n]["val"]["macro_f1"])
        lines += [
            f"Best by val macro-F1: **{best}** ({shown} macro-F1 {with_ci(scores[best][shown], 'macro_f1')}).",
            "",
        ]
    lines += shortcut_lines(scores, shortcuts, shown, versus_shortcut)
    lines += sections or []
    lines += per_class_table(scores, classes, shown)
    lines += figure_lines(figures)
    return "\n".join(lines)


def sources_lines(sources: list[dict]) -> list[str]:
    """The datasets the data came from (the data report's `sources`, when `make study-data` assembled
    it), to cite with their licences; none for other data."""
    if not sources:
        return []
    lines = ["## Data sources", "", "Cite them when you use these results:", ""]
    lines += [f"- {s['citation']}, doi:{s['doi']} ({s['licence']}): {s['films_kept']} films" for s in sources]
    return lines + [""]


def model_cards_lines(models_dir: str | os.PathLike, summary_dir: str | os.PathLike, backbones, seeds) -> list[str]:
    """The summary's links to every model card, and the share of films each run's OOD score flags on each
    set its `<model>.ood.json` records (val, test and each external set, `external/<name>`)."""
    models_dir = Path(models_dir)

    def link(label: str, path: Path) -> str:
        return f"[{label}]({os.path.relpath(path, summary_dir)})"

    lines = [
        "## Model cards",
        "",
        "Each model's card: intended use, data, recipe, test and external metrics with CIs per "
        "class, the lungs hidden, calibration, the shortcut audit, limitations and provenance, written from its "
        "metrics file.",
        "",
    ]
    for b in backbones:
        runs = ", ".join(link(f"seed {s}", models_dir / f"{run_name(b, s)}.card.md") for s in seeds)
        lines.append(f"- {link(b, models_dir / f'{b}.card.md')} (its seed ensemble; runs: {runs})")
    lines += [f"- {link('ensemble', models_dir / 'ensemble.card.md')}", ""]
    fitted = {run_name(b, s): models_dir / f"{run_name(b, s)}.ood.json" for b in backbones for s in seeds}
    shares = {run: read_json(p).get("flagged", {}) for run, p in fitted.items() if p.is_file()}
    sets = list(dict.fromkeys(k for v in shares.values() for k in v))
    if shares and sets:
        lines += [
            "## Out-of-distribution flag",
            "",
            "`cxr4-predict` flags a film (`ood_flag` true) that lies further from the training films (in the "
            "network's features or the film's layout) than 95% of val films do (docs/predict.md). Share of "
            "films flagged per run:",
            "",
            "| Run | " + " | ".join(sets) + " |",
            "|---|" + "---:|" * len(sets),
        ]
        lines += [
            f"| {run} | " + " | ".join(f"{v[k]:.1%}" if k in v else "" for k in sets) + " |"
            for run, v in shares.items()
        ] + [""]
    return lines
