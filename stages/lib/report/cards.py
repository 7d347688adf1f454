"""Model cards: `<model>.card.md` beside each model, written from its metrics file and the data report.

Nothing in a card is typed by hand: every number comes from the metrics JSON that evaluate (one run),
combine (a backbone's seed ensemble) or ensemble (every run) wrote, and from preprocess's data report;
the research-use notice is docs/notice.md's. Top to bottom: what the model is, its intended use, the data
(counts, grouping, leakage, licences), its recipe, how it scores (the metrics with CIs and per class, then
the blocks only some metrics files hold, each where the file holds it: external validation, subgroups, the
lungs hidden, calibration with temperature scaling and conformal coverage), the shortcut audit (file
metadata, the film outside the lungs), the OOD flag, limitations and provenance.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json, write_text
from stages.lib.core.names import PIXEL_SHORTCUT, SHORTCUT
from stages.lib.core.provenance import code_words
from stages.lib.report.phrases import (
    absent_lines,
    box_words,
    fmt,
    images,
    pair,
    read_outside_words,
    value_ci,
    with_ci,
)
from stages.lib.results.comparisons import stronger
from stages.lib.results.evaluation import shown_split_of
from stages.lib.results.metrics import ci_columns

NOTICE = str(Path(__file__).resolve().parents[3] / "docs" / "notice.md")


def add_arguments(parser) -> None:
    """The card's command-line arguments, shared by the stages that write metrics (paths from dvc.yaml)."""
    parser.add_argument("--card", help="model card to write (Markdown, beside the model: <model>.card.md)")
    parser.add_argument("--data-report", default="metrics/data_report.json", help="preprocess's data report")
    parser.add_argument(
        "--notice",
        default=NOTICE,
        help="the research-use notice the card quotes (default: the project's docs/notice.md, beside the code)",
    )
    parser.add_argument(
        "--pixel-shortcut",
        default="metrics/pixel_shortcut.json",
        help="the pixel shortcut's metrics (stage pixel_shortcut): the card compares the model with it",
    )


def write_card_from(args, name: str, synthetic: bool) -> None:
    """The card of model `name`, when the stage was given --card: from the arguments add_arguments declared
    and the stage's own --metrics."""
    if args.card:
        write_card(args.card, name, args.metrics, args.data_report, args.notice, synthetic, args.pixel_shortcut)


# params: the card, the model's name, the files it is written from (metrics, data report, notice, the pixel
# shortcut's metrics) and whether the data is synthetic: the command line of the stages that write cards.
def write_card(
    out: str | os.PathLike,
    name: str,
    metrics_path: str | os.PathLike,
    data_report_path: str | os.PathLike,
    notice_path: str | os.PathLike,
    synthetic: bool = False,
    pixel_shortcut_path: str | os.PathLike | None = None,
) -> str:
    """Write the card of model `name` to `out` from its metrics file (and the pixel shortcut's, when given);
    refused while either is missing."""
    for path, stage in ((metrics_path, "evaluate"), (pixel_shortcut_path, "pixel_shortcut")):
        if path is not None and not Path(path).is_file():
            raise UserError(
                f"no metrics for {name if stage == 'evaluate' else 'the pixel shortcut'} yet ({path} not found): "
                f"a card is written from them; run {stage} first (dvc repro)"
            )
    text = card_markdown(
        name,
        read_json(metrics_path),
        read_json(data_report_path),
        notice(notice_path),
        os.path.relpath(metrics_path, Path(out).parent),
        synthetic,
        read_json(pixel_shortcut_path) if pixel_shortcut_path is not None else None,
    )
    write_text(out, text)
    return text


def notice(path: str | os.PathLike) -> str:
    """docs/notice.md's first paragraph (the one-paragraph research-use notice)."""
    try:
        paragraphs = Path(path).read_text(encoding="utf-8").split("\n\n")
    except FileNotFoundError as err:
        raise UserError(
            f"{path} not found: the model card quotes its research-use notice; restore docs/notice.md"
        ) from err
    return " ".join(next(p for p in paragraphs if not p.startswith("#")).split())


# params: the model's name, the three files' contents it is written from, its metrics' link, whether synthetic.
def card_markdown(
    name: str,
    m: dict,
    data: dict,
    research_notice: str,
    metrics_link: str,
    synthetic: bool = False,
    pixel: dict | None = None,
) -> str:
    """The card of model `name` from its metrics `m`, the data report `data` and the pixel shortcut's metrics
    `pixel`: test metrics, or val when test labels are hidden."""
    split = shown_split_of(m)
    lines = intro_lines(name, m, split, research_notice, metrics_link) + data_lines(data)
    if synthetic:
        lines += ["> **SYNTHETIC data**: drawn shapes, not X-rays; the numbers below say nothing about medicine.", ""]
    lines += ["## Recipe", ""] + recipe(m) + [""]
    lines += metrics_lines(m, split)
    if isinstance(m.get("external"), dict) and m["external"]:
        lines += external_lines(m["external"])
    if isinstance(m.get("subgroups"), dict):
        lines += subgroup_lines(m["subgroups"], split)
    if isinstance(m.get("lungs_hidden"), dict):
        lines += lungs_hidden_lines(m["lungs_hidden"], m[m["lungs_hidden"]["split"]])
    lines += calibration_lines(m, split)
    shortcuts = {SHORTCUT: data.get("shortcut") or {}, PIXEL_SHORTCUT: pixel or {}}
    lines += ["", "## Shortcut audit", ""] + shortcut_lines(m, shortcuts, split)
    if isinstance(m.get("ood"), dict):
        lines += ood_lines(m["ood"])
    lines += limitation_lines(images(m[split]), split) + provenance_lines(m.get("provenance") or {})
    return "\n".join(lines)


def intro_lines(name: str, m: dict, split: str, research_notice: str, metrics_link: str) -> list[str]:
    """The title, the research-use notice, where the card comes from, what the model is, its intended use."""
    return [
        f"# Model card: {name}",
        "",
        f"> **Research use only: not for diagnosis, not a medical device.** {research_notice}",
        "",
        f"Written by the pipeline from [{metrics_link}]({metrics_link}) and the data report; do not edit "
        "(`dvc repro` rewrites it).",
        "",
        "## Model",
        "",
        f"- What: {what_it_is(name, m)}.",
        f"- Output: one probability per class ({', '.join(m[split]['per_class'])}) for a frontal chest X-ray.",
        "",
        "## Intended use",
        "",
        "Research on classifying frontal chest X-rays into the classes above and on comparing networks on the "
        "data described below. Not for diagnosis, treatment, triage or any clinical decision; not for lateral "
        "views, other body parts or other modalities (`cxr4-predict` flags such films where an OOD score is "
        "fitted, but does not refuse them).",
        "",
        "## Data",
        "",
    ]


def limitation_lines(n: int | None, split: str) -> list[str]:
    """What the numbers do not show, `n` the images of `split` they come from."""
    return [
        "## Known limitations",
        "",
        f"- {n} {split} images: the CIs above are that wide; a difference inside them is not evidence.",
        "- The numbers hold for data like the data above (its hospitals, devices, ages, label sources), "
        "not for other populations; validate on your own films before relying on any of them.",
        "- Four classes only: any other finding is forced into one of them.",
        "- A film unlike the training films (OOD flag true) may still receive a confident class.",
        "",
    ]


def provenance_lines(prov: dict) -> list[str]:
    """The code's commit, the data's DVC stamp, and where the params are (the metrics file's `provenance`)."""
    git = prov.get("git") or {}
    return [
        "## Provenance",
        "",
        f"- Code: {code_words(git)}",
        f"- Data: {data_stamp(prov.get('data'))}",
        "- Params: the recipe above; every value in the metrics file's `provenance`.",
        "",
    ]


# --- what the model is and what it was made from -----------------------------------------------


def what_it_is(name: str, m: dict) -> str:
    """One run, a backbone's seed ensemble or the ensemble of every run, as its metrics file says."""
    params = (m.get("provenance") or {}).get("params", {})
    if "members" in m:
        return f"the mean of the class probabilities of {len(m['members'])} runs ({', '.join(m['members'])})"
    if "seeds" in m and isinstance(m["seeds"], dict):
        return (
            f"{params.get('backbone', name)}: the mean of the class probabilities of its runs with seeds "
            f"{', '.join(map(str, params.get('seeds', m['seeds'].get('runs', {}).keys())))} (its seed ensemble)"
        )
    return (
        f"{params.get('backbone', name)}, one training run (seed {m.get('seed')}): the checkpoint of epoch "
        f"{m.get('best_epoch')} of {m.get('epochs_run')} (best val macro-F1)"
    )


def recipe(m: dict) -> list[str]:
    """The params the model was trained with: one run's own, or each member run's."""
    prov = m.get("provenance") or {}
    runs = prov.get("runs") or {"": prov}
    lines = []
    for seed, run in runs.items():
        params = (run or {}).get("params", {})
        for section in ("preprocess", "train", "augment", "evaluate"):
            if isinstance(params.get(section), dict):
                values = ", ".join(f"{k}={v}" for k, v in params[section].items())
                lines.append(f"- {f'seed {seed}, ' if seed else ''}`{section}`: {values}")
    if "members" in m:
        lines.append("- Each member's recipe: its own card (models/<backbone>/seed<seed>.card.md).")
    return lines


def data_lines(data: dict) -> list[str]:
    """The data report's layout, counts per split and class, patient grouping, leakage, duplicates, licences."""
    classes = list(next(iter(data["counts"].values())))
    lines = [
        f"Layout `{data.get('layout')}`; the data: {data_stamp((data.get('provenance') or {}).get('data'))}.",
        "",
        "| Split | " + " | ".join(classes) + " | Total |",
        "|---|" + "---:|" * (len(classes) + 1),
    ]
    for split, counts in data["counts"].items():
        lines.append(
            f"| {split} | " + " | ".join(str(counts.get(c, 0)) for c in classes) + f" | {sum(counts.values())} |"
        )
    made = data.get("splits_made") or {}
    grouping = "; ".join(f"{s}: {note}" for s, note in made.items()) or "the splits as the layout gives them"
    leakage = (data.get("leakage") or {}).get("summary") or "none found"
    duplicates = (data.get("duplicates") or {}).get("summary") or "none found"
    licences = data.get("licences")
    lines += [
        "",
        f"- Patient grouping: {grouping} (a split drawn here keeps each patient's films in one split).",
        f"- Leakage between splits (near-duplicate films): {leakage}.",
        f"- Duplicates: {duplicates}.",
        "- Licences of the sources (films each, from the data's SOURCES.csv): "
        + (
            "; ".join(f"{k}: {v}" for k, v in licences.items())
            if isinstance(licences, dict) and licences
            else "not recorded by this layout; see the data's own README and cite its sources (docs/notice.md)"
        )
        + ".",
        "",
    ]
    return lines


# What each shortcut sees and where a score near it may come from instead of the lungs.
SHORTCUT_WORDS = {
    SHORTCUT: ("file metadata only (size, format, dimensions, bit depth), no pixels", "how the files were stored"),
    PIXEL_SHORTCUT: (
        "the film outside a central box that covers the lungs, the box hidden",
        "what lies outside the lungs (body size, devices, markers, the scanner's look)",
    ),
}


def shortcut_lines(m: dict, shortcuts: dict, split: str) -> list[str]:
    """Each shortcut's score on `split` beside the model's, and whether the model clearly beats the stronger.
    `shortcuts[name]`: the data report's `shortcut` block (SHORTCUT) or the pixel shortcut's metrics."""
    best = stronger({name: ((s or {}).get(split) or {}).get("macro_f1") for name, s in shortcuts.items()})
    if best is None or not m.get(split):
        return ["No shortcut was scored on this split.", ""]
    lines = ["Classifiers that cannot read the lungs, fitted on the same train films, each seeing:", ""] + [
        f"- `{name}`: {SHORTCUT_WORDS[name][0]}. Its {split} macro-F1: **{shortcuts[name][split]['macro_f1']:.3f}**."
        for name in SHORTCUT_WORDS
        if (shortcuts.get(name) or {}).get(split)
    ]
    base, (low, high) = shortcuts[best][split]["macro_f1"], m[split].get("macro_f1_ci95") or (None, None)
    if low is not None and low > base:
        verdict = "clearly beats it: the lower end of its 95% CI is above the shortcut's score"
    elif high is not None and high < base:
        verdict = "scores BELOW it: the shortcut classifies these films better; the model has not shown that it reads the lungs"
    else:
        verdict = f"does NOT clearly beat it: its 95% CI reaches the shortcut's score, so its score may come from {SHORTCUT_WORDS[best][1]} rather than from the lungs"
    return lines + [
        "",
        f"This model scores {with_ci(m[split], 'macro_f1')}. Against the stronger of the two ({best}) it {verdict}.",
        "",
    ]


# --- how it scores ----------------------------------------------------------------------------------


def metrics_lines(m: dict, split: str) -> list[str]:
    """The headline metrics on `split` (and val beside test) with CIs, then each class's."""
    s = m[split]
    lines = [
        f"## {split.capitalize()} metrics ({images(s)} images)",
        "",
        "Point estimates with 95% bootstrap confidence intervals `[lo, hi]` (resampling the images).",
        "",
    ]
    shown = {split: s, **({"val": m["val"]} if split == "test" and m.get("val") else {})}
    lines += metric_rows(shown, "Split")
    lines += [line for name, block in shown.items() for line in absent_lines(block, name)]
    lines += ["| Class | Precision | Recall | F1 | AUROC | Images |", "|---|---:|---:|---:|---:|---:|"]
    return (
        lines
        + [
            f"| {c} | {pc['note']} | | | | 0 |"
            if pc.get("absent")
            else f"| {c} | {fmt(pc.get('precision'))} | {fmt(pc.get('recall'))} | {fmt(pc.get('f1'))} | "
            f"{fmt(pc.get('auroc'))} | {pc.get('support')} |"
            for c, pc in s["per_class"].items()
        ]
        + [""]
    )


def subgroup_lines(sub: dict, split: str) -> list[str]:
    """The metrics file's `subgroups` block: each subgroup's headline metrics, those wholly below overall named."""
    flagged = [
        f"{c}: {g}" for c, groups in sub.get("by", {}).items() for g, v in groups.items() if v.get("below_overall")
    ]
    lines = [
        "## Subgroups",
        "",
        f"On {sub.get('split', split)}; overall macro-F1 {fmt(sub.get('overall_macro_f1'))}."
        + (
            f" **Wholly below it (95% CI): {', '.join(flagged)}.**"
            if flagged
            else " No subgroup's macro-F1 CI lies wholly below it."
        ),
        "",
    ]
    return lines + metric_rows(sub.get("by", {}), "Subgroup")


def calibration_lines(m: dict, split: str) -> list[str]:
    """The ECE on `split`, then temperature scaling and conformal coverage where the metrics file has them."""
    return [
        "## Calibration",
        "",
        f"Expected calibration error ({split}): {fmt(m[split].get('ece'))} "
        "(0: the predicted probability of the predicted class matches how often it is right).",
    ] + posthoc_lines(m, split)


def posthoc_lines(m: dict, split: str) -> list[str]:
    """Temperature scaling (before -> after on `split`) and the conformal sets' coverage, as the metrics
    file's `temperature` and `coverage` blocks (stages/lib/results/posthoc.py) hold them; nothing without them."""
    lines = []
    t = m.get("temperature")
    if isinstance(t, dict) and isinstance(t.get(split), dict):
        scored = t[split]
        lines += [
            "",
            f"Temperature scaling, T = {fmt(t.get('value'))} fitted on val"
            + (f" ({t['note']})" if t.get("note") else "")
            + f"; {split} before -> after (95% CI):",
            "",
        ]
        for key, title in (("nll", "NLL"), ("brier", "Brier score"), ("ece", "ECE")):
            b = scored.get(key) or {}
            lines.append(
                f"- {title}: {fmt(b.get('before'))} {pair(b.get('before_ci95'))} -> "
                f"{fmt(b.get('after'))} {pair(b.get('after_ci95'))}"
            )
    c = m.get("coverage")
    if isinstance(c, dict) and isinstance(c.get(split), dict):
        cov = c[split]
        lines += [
            "",
            f"Conformal prediction sets at alpha {c.get('alpha')} (target coverage {fmt(c.get('target'))}): "
            f"{split} coverage {fmt(cov.get('coverage'))} {pair(cov.get('coverage_ci95'))}, mean set size "
            f"{fmt(cov.get('mean_set_size'))} {pair(cov.get('mean_set_size_ci95'))}"
            + (f" ({c['note']})." if c.get("note") else ".")
            + (f" Note: {c['val_use']}." if c.get("val_use") else ""),
        ]
    return lines + ([""] if lines else [])


def external_lines(sets: dict) -> list[str]:
    """Each external set (the metrics file's `external` block): the headline metrics with CIs, the drop
    from the internal test with its CI, calibration and coverage there, the OOD flag's share, and
    recall per class with an absent class shown as absent."""
    lines = [
        "## External validation",
        "",
        "Labelled films from elsewhere, preprocessed as the training data and scored as test (docs/calibration.md).",
        "",
    ] + metric_rows(sets, "Set")
    for name, x in sets.items():
        d, t, c = x.get("drop") or {}, (x.get("temperature") or {}).get("ece") or {}, x.get("coverage") or {}
        absent = x.get("absent_classes") or []
        lines.append(
            f"- {name}: drop in macro-F1 from the internal test "
            + (
                f"{fmt(d.get('test_macro_f1'))} to {fmt(d.get('external_macro_f1'))}: {fmt(d.get('drop'))} "
                f"{pair(d.get('drop_ci95'))}"
                if d
                else "n/a (test labels hidden)"
            )
            + (f" (over the classes present; absent here: {', '.join(absent)})" if absent else "")
            + f"; ECE {fmt(t.get('before'))} -> {fmt(t.get('after'))} after temperature scaling; prediction-set "
            f"coverage {fmt(c.get('coverage'))} {pair(c.get('coverage_ci95'))}"
            + (f"; OOD flag {x['ood']['flagged']:.1%} of its films" if isinstance(x.get("ood"), dict) else "")
            + ". Recall per class: "
            + ", ".join(
                f"{k} absent" if v.get("absent") else f"{k} {fmt(v.get('recall'))}"
                for k, v in (x.get("per_class") or {}).items()
            )
            + "."
        )
    return lines + [""]


def ood_lines(ood: dict) -> list[str]:
    """The metrics file's `ood` block: what the flag means and the share of films it flags on each set."""
    shares = ", ".join(f"{k} {v:.1%}" for k, v in ood.get("flagged", {}).items())
    return [
        "## Out-of-distribution flag",
        "",
        f"`cxr4-predict` flags a film that lies further from the training films (in the network's "
        f"features or the film's layout) than {ood.get('keep', 0.95):.0%} of val films do. Share "
        f"flagged: {shares}.",
        "",
    ]


def lungs_hidden_lines(block: dict, scored: dict) -> list[str]:
    """The metrics file's `lungs_hidden` block beside `scored`, the same split's normal metrics: macro-F1
    with and without the lungs, the paired cost, each class's recall both ways, and the classes read
    from outside the lungs, in words."""
    cost = block.get("cost") or {}
    lines = [
        "## Lungs hidden",
        "",
        f"The same {block['split']} films with the lungs hidden ({box_words(block['box'])}): macro-F1 "
        f"{value_ci(block['macro_f1'], block.get('macro_f1_ci95'))} against {with_ci(scored, 'macro_f1')} with them; "
        f"hiding them costs {value_ci(cost.get('difference'), cost.get('ci95'))} (paired 95% CI).",
        "",
        "| Class | Recall | With the lungs hidden | Recall kept | Other classes' films called it | Margin kept |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, v in block["per_class"].items():
        if v.get("absent"):
            lines.append(f"| {c} | absent | | | | |")
            continue
        kept, margin = ("n/a" if x is None else f"{x:.0%}" for x in (v["kept"], v["margin_kept"]))
        called = f"{v['other_films_called_it_with_lungs']:.0%} -> {v['other_films_called_it']:.0%}"
        lines.append(f"| {c} | {fmt(v['recall_with_lungs'])} | {fmt(v['recall'])} | {kept} | {called} | {margin} |")
    return lines + ["", read_outside_words(block), ""]


# --- tables and stamps -----------------------------------------------------------------------------


def _is_scored(m) -> bool:
    return isinstance(m, dict) and any(metric.key in m for metric in ci_columns())


def metric_rows(blocks: dict, label: str) -> list[str]:
    """A table of scored sets (`{set: metrics}`, or one level deeper `{attribute: {group: metrics}}`),
    each tabled metric with a CI (metrics.ci_columns) with its 95% CI."""
    rows = []
    for key, value in blocks.items():
        if _is_scored(value):
            rows.append((str(key), value))
        elif isinstance(value, dict):
            rows += [(f"{key}: {group}", m) for group, m in value.items() if _is_scored(m)]
    if not rows:
        return []
    columns = ci_columns()
    lines = [
        f"| {label} | Images | " + " | ".join(f"{c.title} [95% CI]" for c in columns) + " |",
        "|---|---:|" + "---|" * len(columns),
    ]
    return (
        lines
        + [
            f"| {name} | {images(m) or 'n/a'} | " + " | ".join(with_ci(m, c.key) for c in columns) + " |"
            for name, m in rows
        ]
        + [""]
    )


def data_stamp(d) -> str:
    """The data's DVC stamp as one phrase: path, hash, where the hash was read."""
    if not isinstance(d, dict):
        return "not recorded (the data is not tracked by DVC)" if d is None else f"`{d}`"
    return f"`{d.get('path')}` (DVC hash `{d.get('md5')}`, from {d.get('from')})"
