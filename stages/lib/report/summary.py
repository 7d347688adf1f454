"""metrics/summary.md: the results section of a paper, as Markdown that renders on GitHub.

One table per split with 95% CIs and the two shortcuts (file metadata only, the film outside the lungs
only) as rows beside the models, the shortcut audit's verdict against the stronger of them, the report
stage's seed, paired-comparison and lungs-hidden sections, the per-class table, then every figure
embedded with its caption. html_report.py turns the same text into one HTML file.
"""

from __future__ import annotations

from stages.lib.core.names import ENSEMBLE, PIXEL_SHORTCUT, SHORTCUT
from stages.lib.report.card_metrics import box_words, read_outside_words
from stages.lib.report.numbers import absent_lines, fmt, value_ci
from stages.lib.report.plots import SYNTHETIC_MARK
from stages.lib.results.comparisons import beats, sentence, stronger

SPLIT_NAMES = {"val": "Validation", "test": "Test"}
# Each shortcut's row label in the split tables.
SHORTCUT_ROWS = {
    SHORTCUT: "*metadata only, no pixels (shortcut audit)*",
    PIXEL_SHORTCUT: "*outside the lungs only (pixel shortcut)*",
}
_TABLED = ("accuracy", "macro_f1", "macro_auroc")  # a shortcut row's columns


def _with_ci(m: dict, key: str) -> str:
    low, high = m.get(f"{key}_ci95", (None, None))
    return f"{fmt(m[key])} [{fmt(low)}, {fmt(high)}]"


def _images(m: dict) -> int:
    return sum(c["support"] for c in m["per_class"].values())


def split_table(
    scores: dict[str, dict],
    training: dict[str, dict],
    split: str,
    study: dict[str, tuple[float, float]],
    shortcuts: dict,
) -> list[str]:
    """One split's table: a row per model, then each shortcut (`shortcuts[name][split]`: its metrics, or only
    its macro-F1); the study's numbers in a last column on val only (the split the study reported)."""
    with_study = bool(study) and split == "val"
    scored = [s[split] for s in scores.values() if s[split] is not None]
    size = f" ({_images(scored[0])} images)" if scored else ""
    lines = [
        f"## {SPLIT_NAMES[split]} split{size}",
        "",
        "| Model | Accuracy [95% CI] | Macro-F1 [95% CI] | Macro AUROC [95% CI] | Macro precision | "
        "Macro recall | ECE | Best epoch / run |" + (" Study acc / F1 |" if with_study else ""),
        "|---|---|---|---|---:|---:|---:|---:|" + ("---:|" if with_study else ""),
    ]
    for name, s in scores.items():
        m, t = s[split], training.get(name, {})
        ref = " " + (f"{study[name][0]:.3f} / {study[name][1]:.3f}" if name in study else "-") + " |"
        if m is None:
            lines.append(f"| {name} | labels hidden | | | | | | |" + (ref if with_study else ""))
            continue
        lines.append(
            f"| {name} | {_with_ci(m, 'accuracy')} | {_with_ci(m, 'macro_f1')} | "
            f"{_with_ci(m, 'macro_auroc')} | {fmt(m['macro_precision'])} | {fmt(m['macro_recall'])} | "
            f"{fmt(m['ece'])} | {t.get('best_epoch', '-')} / {t.get('epochs_run', '-')} |" + (ref if with_study else "")
        )
    for name, label in SHORTCUT_ROWS.items():
        m = (shortcuts.get(name) or {}).get(split)
        if m:
            cells = [_with_ci(m, k) if f"{k}_ci95" in m else fmt(m[k]) if k in m else "" for k in _TABLED]
            cells += [""] * (4 + with_study)
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
            f"{_with_ci(s[split], 'macro_f1')} vs {base:.3f}; paired: {said}).",
            "",
        ]  # one quote each
    return lines


def lungs_hidden_markdown(blocks: dict[str, dict], scores: dict[str, dict]) -> list[str]:
    """Each model scored with the lungs hidden (its `lungs_hidden` block): macro-F1 both ways, the paired cost,
    recall per class both ways, and the classes it reads from outside the lungs."""
    if not blocks:
        return []
    first = next(iter(blocks.values()))
    lines = [
        "## Lungs hidden",
        "",
        f"Each model on the same {first['split']} films with the lungs hidden ({box_words(first['box'])}). "
        "Recall per class: with the lungs -> hidden.",
        "",
        "| Model | Macro-F1 [95% CI] | Lungs hidden [95% CI] | Cost, paired [95% CI] | Recall per class |",
        "|---|---|---|---|---|",
    ]
    for name, b in blocks.items():
        recall = ", ".join(
            f"{c} {v['recall_with_lungs']:.2f} -> {v['recall']:.2f}"
            for c, v in b["per_class"].items()
            if not v.get("absent")
        )
        lines.append(
            f"| {name} | {_with_ci(scores[name][b['split']], 'macro_f1')} | "
            f"{value_ci(b['macro_f1'], b['macro_f1_ci95'])} | {value_ci(b['cost']['difference'], b['cost']['ci95'])} | "
            f"{recall} |"
        )
    lines.append("")
    for name, b in blocks.items():
        lines += [f"- {name}: {read_outside_words(b)}"]
    return lines + [""]


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
    `sections`: ready Markdown lines (the report stage's seeds and paired comparisons), placed after the
    shortcut audit; `versus_shortcut[model][name]`: each model's paired macro-F1 comparison with each
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
            f"Best by val macro-F1: **{best}** ({shown} macro-F1 {_with_ci(scores[best][shown], 'macro_f1')}).",
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
