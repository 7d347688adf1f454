"""metrics/summary.md: the results section of a paper, as Markdown that renders on GitHub.

One table per split with 95% CIs and the metadata-only shortcut as a row beside the models, the
shortcut audit's verdict, the report stage's seed and paired-comparison sections, the per-class table,
then every figure embedded with its caption. html_report.py turns the same text into one HTML file.
"""

from __future__ import annotations

from stages.lib.core.names import ENSEMBLE, SHORTCUT
from stages.lib.report.numbers import fmt
from stages.lib.report.plots import SYNTHETIC_MARK
from stages.lib.results.comparisons import beats, sentence
from stages.lib.results.metrics import MACRO_AVERAGES, absent_from

SPLIT_NAMES = {"val": "Validation", "test": "Test"}


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
    shortcut: dict,
) -> list[str]:
    """One split's table: a row per model, then the metadata-only shortcut; the study's numbers in a
    last column on val only (the split the study reported)."""
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
    if split in shortcut:
        lines.append(
            f"| *metadata only, no pixels (shortcut audit)* | | {fmt(shortcut[split]['macro_f1'])} "
            "| | | | | |" + (" |" if with_study else "")
        )
    return lines + [""] + (absent_lines(scored[0], split) if scored else [])


def absent_lines(m: dict, split: str) -> list[str]:
    """What a class with no film in the split changed: which macro averages are over fewer classes."""
    absent = absent_from(m)
    if not absent:
        return []
    present = [c for c in m["per_class"] if c not in absent]
    return [
        f"> **Not in {split}: {', '.join(absent)}.** No precision, recall, F1 or AUROC exists for it (n/a, "
        f"not 0). The {split} macro averages ({', '.join(MACRO_AVERAGES)}) are over the {len(present)} classes "
        f"present ({', '.join(present)}); accuracy and the weighted averages are unchanged.",
        "",
    ]


def shortcut_lines(scores: dict[str, dict], shortcut: dict, split: str, versus: dict | None = None) -> list[str]:
    """The metadata-only baseline beside the networks, and a loud line for each that does not beat it.

    `versus[model]`: the paired comparison model − shortcut on macro-F1 (comparisons.paired_difference);
    "beats" is comparisons.beats, the one rule README and docs use too. A model not compared is not
    said to beat it.
    """
    if split not in shortcut:
        return []
    base, versus = shortcut[split]["macro_f1"], versus or {}
    recall = ", ".join(f"{c} {r:.2f}" for c, r in shortcut[split]["per_class_recall"].items())
    lines = [
        "## Shortcut audit",
        "",
        f"A random forest that sees only file metadata ({', '.join(shortcut.get('features', []))}), no pixels, "
        f"reaches {split} macro-F1 **{base:.3f}** (recall per class: {recall}). Scores near it may come from "
        f"how the images were stored rather than from what they show. A model beats it when the paired 95% CI "
        f"of its difference on the same images lies above 0.",
        "",
    ]
    for name, s in scores.items():
        if s[split] is None or (name in versus and beats(versus[name])):
            continue
        said = sentence(name, SHORTCUT, "macro_f1", versus[name]) if name in versus else "not compared"
        lines += [
            f"> **WARNING: {name} does not clearly beat the metadata-only shortcut** ({split} macro-F1 "
            f"{_with_ci(s[split], 'macro_f1')} vs {base:.3f}; paired: {said}).",
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


# params: the results report.py collected (scores, training, figures, study, shortcut, comparisons) and how to
# show them (classes, synthetic, split, sections).
def summary_markdown(
    scores: dict[str, dict],
    training: dict[str, dict],
    classes,
    synthetic: bool,
    figures: list[tuple[str, str, str]],
    study: dict[str, tuple[float, float]],
    shortcut: dict | None = None,
    shown: str = "test",
    sections: list[str] | None = None,
    versus_shortcut: dict | None = None,
) -> str:
    """The results section: tables per split with CIs, shortcut audit, further sections, per class, figures.

    `scores[model][split]`: the split's metrics dict (None when its labels are hidden); `training[model]`:
    best_epoch and epochs_run; `figures`: (path relative to the summary, title, caption); `study[model] =
    (val accuracy, val macro-F1)`; `shortcut`: the data report's shortcut audit; `shown`: the split of the
    per-class table and the verdicts (val when test labels are hidden); `sections`: ready Markdown lines
    (the report stage's seeds and paired comparisons), placed after the shortcut audit; `versus_shortcut`:
    each model's paired macro-F1 comparison with the shortcut, which decides the audit's warnings.
    """
    shortcut = shortcut or {}
    lines = ["# Results", ""]
    if synthetic:
        lines += [
            f"> **{SYNTHETIC_MARK.upper()}.** These numbers come from generated images: they show "
            "the pipeline works and say nothing about medicine.",
            "",
        ]
    lines += [
        "Point estimates with 95% bootstrap confidence intervals (resampling the split's images). "
        f"`{ENSEMBLE}` averages every run's probabilities. A model whose interval reaches the "
        "metadata-only row has not shown that it reads the images.",
        "",
    ]
    for split in SPLIT_NAMES:
        lines += split_table(scores, training, split, study, shortcut)
    if scores:
        best = max(scores, key=lambda n: scores[n]["val"]["macro_f1"])
        lines += [
            f"Best by val macro-F1: **{best}** ({shown} macro-F1 {_with_ci(scores[best][shown], 'macro_f1')}).",
            "",
        ]
    lines += shortcut_lines(scores, shortcut, shown, versus_shortcut)
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
