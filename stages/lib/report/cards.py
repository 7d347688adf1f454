"""Model cards: `<model>.card.md` beside each model, written from its metrics file and the data report.

Nothing in a card is typed by hand: every number comes from the metrics JSON that evaluate (one run),
combine (a backbone's seed ensemble) or ensemble (every run) wrote, and from preprocess's data report;
the research-use notice is docs/notice.md's. Blocks that only some runs have (external validation,
subgroups, temperature, conformal coverage, the OOD flag) appear when the metrics file holds them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json, write_text

NOTICE = str(Path(__file__).resolve().parents[3] / "docs" / "notice.md")
HEADLINE = (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"), ("macro_auroc", "Macro AUROC"))


def add_arguments(parser) -> None:
    """The card's command-line arguments, shared by the stages that write metrics (paths from dvc.yaml)."""
    parser.add_argument("--card", help="model card to write (Markdown, beside the model: <model>.card.md)")
    parser.add_argument("--data-report", default="metrics/data_report.json", help="preprocess's data report")
    parser.add_argument(
        "--notice",
        default=NOTICE,
        help="the research-use notice the card quotes (default: the project's docs/notice.md, beside the code)",
    )


def write_card(
    out: str | os.PathLike,
    name: str,
    metrics_path: str | os.PathLike,
    data_report_path: str | os.PathLike,
    notice_path: str | os.PathLike,
    synthetic: bool = False,
) -> str:
    """Write the card of model `name` to `out` from its metrics file; refused while that file is missing."""
    if not Path(metrics_path).is_file():
        raise UserError(
            f"no metrics for {name} yet ({metrics_path} not found): a card is written from them; run "
            "evaluate first (dvc repro)"
        )
    text = card_markdown(
        name,
        read_json(metrics_path),
        read_json(data_report_path),
        notice(notice_path),
        os.path.relpath(metrics_path, Path(out).parent),
        synthetic,
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


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ci(m: dict, key: str) -> str:
    low, high = m.get(f"{key}_ci95") or (None, None)
    return f"{_f(m.get(key))} [{_f(low)}, {_f(high)}]"


def _n(m: dict) -> int | None:
    pc = m.get("per_class")
    return sum(c["support"] for c in pc.values()) if isinstance(pc, dict) else m.get("n")


def _is_scored(m) -> bool:
    return isinstance(m, dict) and any(k in m for k, _ in HEADLINE)


def metric_rows(blocks: dict, label: str) -> list[str]:
    """A table of scored sets (`{set: metrics}`, or one level deeper `{attribute: {group: metrics}}`),
    each headline metric with its 95% CI."""
    rows = []
    for key, value in blocks.items():
        if _is_scored(value):
            rows.append((str(key), value))
        elif isinstance(value, dict):
            rows += [(f"{key}: {group}", m) for group, m in value.items() if _is_scored(m)]
    if not rows:
        return []
    lines = [
        f"| {label} | Images | " + " | ".join(f"{t} [95% CI]" for _, t in HEADLINE) + " |",
        "|---|---:|" + "---|" * len(HEADLINE),
    ]
    return (
        lines
        + [f"| {name} | {_n(m) or 'n/a'} | " + " | ".join(_ci(m, k) for k, _ in HEADLINE) + " |" for name, m in rows]
        + [""]
    )


def what_it_is(name: str, m: dict) -> str:
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


def _data(d) -> str:
    """The data's DVC stamp as one phrase: path, hash, where the hash was read."""
    if not isinstance(d, dict):
        return "not recorded (the data is not tracked by DVC)" if d is None else f"`{d}`"
    return f"`{d.get('path')}` (DVC hash `{d.get('md5')}`, from {d.get('from')})"


def data_lines(data: dict) -> list[str]:
    classes = list(next(iter(data["counts"].values())))
    lines = [
        f"Layout `{data.get('layout')}`; the data: {_data((data.get('provenance') or {}).get('data'))}.",
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


def shortcut_lines(m: dict, shortcut: dict, split: str) -> list[str]:
    if split not in shortcut or not m.get(split):
        return ["The data report has no shortcut audit for this split.", ""]
    base, (low, high) = shortcut[split]["macro_f1"], m[split].get("macro_f1_ci95") or (None, None)
    stored = (
        "so its score may come from how the files were stored (size, format, bit depth) rather than from what they show"
    )
    if low is not None and low > base:
        verdict = "clearly beats it: the lower end of its 95% CI is above the shortcut's score"
    elif high is not None and high < base:
        verdict = (
            "scores BELOW it: file metadata alone classifies these films better than this model reads them; "
            "the model has not shown that it reads the images"
        )
    else:
        verdict = f"does NOT clearly beat it: its 95% CI reaches the shortcut's score, {stored}"
    return [
        f"A classifier that sees only file metadata, no pixels, scores {split} macro-F1 **{base:.3f}**; this "
        f"model {_ci(m[split], 'macro_f1')}. It {verdict}.",
        "",
    ]


def posthoc_lines(m: dict, split: str) -> list[str]:
    """Temperature scaling (before -> after on `split`) and the conformal sets' coverage, as the metrics
    file's `temperature` and `coverage` blocks (stages/lib/results/posthoc.py) hold them; nothing without them."""
    lines = []
    t = m.get("temperature")
    if isinstance(t, dict) and isinstance(t.get(split), dict):
        scored = t[split]
        lines += [
            "",
            f"Temperature scaling, T = {_f(t.get('value'))} fitted on val; {split} before -> after (95% CI):",
            "",
        ]
        for key, title in (("nll", "NLL"), ("brier", "Brier score"), ("ece", "ECE")):
            b = scored.get(key) or {}
            lines.append(
                f"- {title}: {_f(b.get('before'))} {_pair(b.get('before_ci95'))} -> "
                f"{_f(b.get('after'))} {_pair(b.get('after_ci95'))}"
            )
    c = m.get("coverage")
    if isinstance(c, dict) and isinstance(c.get(split), dict):
        cov = c[split]
        lines += [
            "",
            f"Conformal prediction sets at alpha {c.get('alpha')} (target coverage {_f(c.get('target'))}): "
            f"{split} coverage {_f(cov.get('coverage'))} {_pair(cov.get('coverage_ci95'))}, mean set size "
            f"{_f(cov.get('mean_set_size'))} {_pair(cov.get('mean_set_size_ci95'))}.",
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
                f"{_f(d.get('test_macro_f1'))} to {_f(d.get('external_macro_f1'))}: {_f(d.get('drop'))} "
                f"{_pair(d.get('drop_ci95'))}"
                if d
                else "n/a (test labels hidden)"
            )
            + (f" (over the classes present; absent here: {', '.join(absent)})" if absent else "")
            + f"; ECE {_f(t.get('before'))} -> {_f(t.get('after'))} after temperature scaling; prediction-set "
            f"coverage {_f(c.get('coverage'))} {_pair(c.get('coverage_ci95'))}"
            + (f"; OOD flag {x['ood']['flagged']:.1%} of its films" if isinstance(x.get("ood"), dict) else "")
            + ". Recall per class: "
            + ", ".join(
                f"{k} absent" if v.get("absent") else f"{k} {_f(v.get('recall'))}"
                for k, v in (x.get("per_class") or {}).items()
            )
            + "."
        )
    return lines + [""]


def _pair(ci) -> str:
    low, high = ci or (None, None)
    return f"[{_f(low)}, {_f(high)}]"


def card_markdown(
    name: str, m: dict, data: dict, research_notice: str, metrics_link: str, synthetic: bool = False
) -> str:
    split = "test" if m.get("test") else "val"
    s = m[split]
    lines = [
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
        f"- Output: one probability per class ({', '.join(s['per_class'])}) for a frontal chest X-ray.",
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
    ] + data_lines(data)
    if synthetic:
        lines += ["> **SYNTHETIC data**: drawn shapes, not X-rays; the numbers below say nothing about medicine.", ""]
    lines += ["## Recipe", ""] + recipe(m) + [""]
    lines += [
        f"## {split.capitalize()} metrics ({_n(s)} images)",
        "",
        "Point estimates with 95% bootstrap confidence intervals `[lo, hi]` (resampling the images).",
        "",
    ]
    lines += metric_rows({split: s, **({"val": m["val"]} if split == "test" and m.get("val") else {})}, "Split")
    lines += ["| Class | Precision | Recall | F1 | AUROC | Images |", "|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {c} | {_f(pc.get('precision'))} | {_f(pc.get('recall'))} | {_f(pc.get('f1'))} | "
        f"{_f(pc.get('auroc'))} | {pc.get('support')} |"
        for c, pc in s["per_class"].items()
    ] + [""]
    if isinstance(m.get("external"), dict) and m["external"]:
        lines += external_lines(m["external"])
    if isinstance(m.get("subgroups"), dict):
        sub = m["subgroups"]
        flagged = [
            f"{c}: {g}" for c, groups in sub.get("by", {}).items() for g, v in groups.items() if v.get("below_overall")
        ]
        lines += [
            "## Subgroups",
            "",
            f"On {sub.get('split', split)}; overall macro-F1 {_f(sub.get('overall_macro_f1'))}."
            + (
                f" **Wholly below it (95% CI): {', '.join(flagged)}.**"
                if flagged
                else " No subgroup's macro-F1 CI lies wholly below it."
            ),
            "",
        ]
        lines += metric_rows(sub.get("by", {}), "Subgroup")
    lines += [
        "## Calibration",
        "",
        f"Expected calibration error ({split}): {_f(s.get('ece'))} "
        "(0: the predicted probability of the predicted class matches how often it is right).",
    ]
    lines += posthoc_lines(m, split)
    lines += ["", "## Shortcut audit", ""] + shortcut_lines(m, data.get("shortcut") or {}, split)
    if isinstance(m.get("ood"), dict):
        shares = ", ".join(f"{k} {v:.1%}" for k, v in m["ood"].get("flagged", {}).items())
        lines += [
            "## Out-of-distribution flag",
            "",
            f"`cxr4-predict` flags a film that lies further from the training films (in the network's "
            f"features or the film's layout) than {m['ood'].get('keep', 0.95):.0%} of val films do. Share "
            f"flagged: {shares}.",
            "",
        ]
    lines += [
        "## Known limitations",
        "",
        f"- {_n(s)} {split} images: the CIs above are that wide; a difference inside them is not evidence.",
        "- The numbers hold for data like the data above (its hospitals, devices, ages, label sources), "
        "not for other populations; validate on your own films before relying on any of them.",
        "- Four classes only: any other finding is forced into one of them.",
        "- A film unlike the training films (OOD flag true) may still receive a confident class.",
        "",
    ]
    prov = m.get("provenance") or {}
    git = prov.get("git") or {}
    lines += [
        "## Provenance",
        "",
        (
            f"- Code: commit `{git['commit']}`" + (" (with uncommitted changes)" if git.get("dirty") else "")
            if git.get("commit")
            else "- Code: not recorded (not run in a git repository)"
        ),
        f"- Data: {_data(prov.get('data'))}",
        "- Params: the recipe above; every value in the metrics file's `provenance`.",
        "",
    ]
    return "\n".join(lines)


def summary_lines(models_dir: str | os.PathLike, summary_dir: str | os.PathLike, backbones, seeds) -> list[str]:
    """The summary's links to every model card, and the share of films each run's OOD score flags on each
    set its `<model>.ood.json` records (val, test and each external set, `external/<name>`)."""
    models_dir = Path(models_dir)

    def link(label: str, path: Path) -> str:
        return f"[{label}]({os.path.relpath(path, summary_dir)})"

    lines = [
        "## Model cards",
        "",
        "Each model's card: intended use, data, recipe, test and external metrics with CIs per "
        "class, calibration, the shortcut audit, limitations and provenance, written from its metrics file.",
        "",
    ]
    for b in backbones:
        runs = ", ".join(link(f"seed {s}", models_dir / b / f"seed{s}.card.md") for s in seeds)
        lines.append(f"- {link(b, models_dir / f'{b}.card.md')} (its seed ensemble; runs: {runs})")
    lines += [f"- {link('ensemble', models_dir / 'ensemble.card.md')}", ""]
    fitted = {f"{b}/seed{s}": models_dir / b / f"seed{s}.ood.json" for b in backbones for s in seeds}
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
