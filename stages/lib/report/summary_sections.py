"""The summary's sections on how far each result holds, placed between its shortcut audit and its per-class
table: across seeds (one run against its seed ensemble), against the other models (paired comparisons,
docs/seeds.md), after calibration (temperature scaling, prediction sets, operating points), in subgroups, on
external films (docs/calibration.md) and with the lungs hidden (docs/shortcuts.md); every number with its CI.
"""

from __future__ import annotations

from stages.lib.report.phrases import box_words, fmt, read_outside_words, value_ci, with_ci
from stages.lib.results.comparisons import sentence
from stages.lib.results.metrics import METRICS, compared_keys
from stages.lib.results.subgroups import MIN_FILMS, TOO_FEW


def seeds_markdown(seeds: dict, backbone_scores: dict) -> list[str]:
    """Each backbone's runs: seed ensemble vs mean single seed, each seed's test macro-F1, mean ± sd,
    and the pooled CI of one run."""
    lines = [
        "## Seeds",
        "",
        "A backbone's result above is its seed ensemble (the mean of its runs' probabilities). One run of it scores:",
        "",
        "| Backbone | Seeds | Test macro-F1 per seed | Mean ± sd | One run, pooled 95% CI | Seed ensemble |",
        "|---|---:|---|---|---|---|",
    ]
    for b, block in seeds.items():
        f1 = {s: h["test"]["macro_f1"] for s, h in block["runs"].items() if "test" in h}
        if not f1:
            continue
        mean, sd = block["mean"]["test"]["macro_f1"], (block["sd"] or {}).get("test", {}).get("macro_f1")
        low, high = block.get("pooled_ci95", {}).get("test", {}).get("macro_f1", [None, None])
        spread = f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f} ({block['note']})"
        pooled = f"[{low:.3f}, {high:.3f}]" if low is not None else "n/a"
        ens = backbone_scores[b]["test"]["macro_f1"]
        lines.append(
            f"| {b} | {block['n']} | "
            + ", ".join(f"{s}: {v:.3f}" for s, v in f1.items())
            + f" | {spread} | {pooled} | {ens:.3f} ({ens - mean:+.3f} vs the mean seed) |"
        )
    return lines + [""]


def comparisons_markdown(rows: list[dict]) -> list[str]:
    """The paired comparisons as sentences, one list per statistic."""
    if not rows:
        return []
    split = rows[0]["split"]
    lines = [
        "## Paired comparisons",
        "",
        f"Differences on the same {split} images (A − B), with a paired bootstrap 95% CI that resamples the "
        "images; a backbone with several seeds is its seed ensemble, one fixed model (the seeds' spread is "
        "the Seeds section's). A CI that contains 0 means the data cannot tell the two apart.",
        "",
    ]
    for key in compared_keys():
        lines += (
            [f"{split.capitalize()} {METRICS[key].label}:", ""]
            + [f"- {sentence(r['a'], r['b'], key, r[key])}" for r in rows]
            + [""]
        )
    return lines


def _before_after(block: dict) -> str:
    return f"{value_ci(block['before'], block['before_ci95'])} → {value_ci(block['after'], block['after_ci95'])}"


def posthoc_markdown(blocks: dict[str, dict], split: str) -> list[str]:
    """`blocks[model]`: a metrics file's temperature / coverage / operating_points blocks; `split`: the
    scored split shown (test, or val when test labels are hidden)."""
    if not blocks:
        return []
    return (
        [
            "## Calibration, prediction sets and operating points",
            "",
            "Fitted on val for each model, applied unchanged to the split below (docs/calibration.md). "
            f"Before → after temperature scaling on the {split} split, 95% bootstrap CIs; lower is better.",
            "",
        ]
        + temperature_table(blocks, split)
        + coverage_table(blocks, split)
        + operating_points_table(blocks, split)
        + [""]
    )


def temperature_table(blocks: dict[str, dict], split: str) -> list[str]:
    """Each model's temperature and its NLL, Brier score and ECE on `split` before -> after scaling."""
    lines = ["| Model | T | NLL | Brier score | ECE |", "|---|---:|---|---|---|"]
    for name, b in blocks.items():
        t = b["temperature"]
        scored = t.get(split)
        if scored is None:
            continue
        lines.append(
            f"| {name} | {t['value']:.2f}{'*' if t.get('note') else ''} | {_before_after(scored['nll'])} | "
            f"{_before_after(scored['brier'])} | {_before_after(scored['ece'])} |"
        )
    return lines + notes({name: b["temperature"].get("note") for name, b in blocks.items()}, "\\* T")


def notes(said: dict[str, str | None], what: str) -> list[str]:
    """The models' notes on a fit (why it was not applied), one line each, under its table."""
    said = {name: note for name, note in said.items() if note}
    return ["", *[f"- {what} of {name}: {note}." for name, note in said.items()]] if said else []


def coverage_table(blocks: dict[str, dict], split: str) -> list[str]:
    """Each model's conformal prediction sets on `split`: coverage, mean size, empty sets, coverage per class."""
    first = next(iter(blocks.values()))["coverage"]
    alpha, val_use = first["alpha"], first.get("val_use")
    lines = [
        "",
        f"Prediction sets (split-conformal, alpha {alpha}): each film's set holds the true class with "
        f"probability at least {1 - alpha:.2f} if {split} resembles val. Coverage per class is the share of that "
        "class's films whose set holds it." + (f" Note: {val_use}." if val_use else ""),
        "",
        "| Model | Coverage [95% CI] | Mean set size [95% CI] | Empty sets | Coverage per class |",
        "|---|---|---|---:|---|",
    ]
    for name, b in blocks.items():
        cov = b["coverage"].get(split)
        if cov is None:
            continue
        per = ", ".join(
            f"{c} absent" if v.get("absent") else f"{c} {value_ci(v['coverage'], v['coverage_ci95'])}"
            for c, v in cov["per_class"].items()
        )
        lines.append(
            f"| {name} | {value_ci(cov['coverage'], cov['coverage_ci95'])} | "
            f"{value_ci(cov['mean_set_size'], cov['mean_set_size_ci95'])} | {cov['empty_sets']} | {per} |"
        )
    return lines + notes({name: b["coverage"].get("note") for name, b in blocks.items()}, "Prediction sets")


def operating_points_table(blocks: dict[str, dict], split: str) -> list[str]:
    """Each model's operating points: the val threshold per class and its sensitivity and specificity on `split`."""
    points = [(name, c, p) for name, b in blocks.items() for c, p in b["operating_points"].items()]
    if not points:
        return []
    lines = [
        "",
        f"Operating points: the threshold reaching the target sensitivity on val, on {split}.",
        "",
        "| Model | Class | Target (val) | Threshold | Sensitivity [95% CI] | Specificity [95% CI] |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, c, p in points:
        s = p.get(split)
        if p["threshold"] is None or s is None:
            lines.append(f"| {name} | {c} | {p['target_sensitivity']} | n/a | {p.get('note') or 'not scored'} | |")
            continue
        lines.append(
            f"| {name} | {c} | {p['target_sensitivity']} | {p['threshold']:.3f} | "
            f"{value_ci(s['sensitivity'], s['sensitivity_ci95'])} | "
            f"{value_ci(s['specificity'], s['specificity_ci95'])} |"
        )
    return lines


def subgroups_markdown(blocks: dict[str, dict]) -> list[str]:
    """`blocks[model]`: a `subgroups` block (stages/lib/results/subgroups.py via evaluate). One table per metadata
    column: a row per value with its n, then each model's macro-F1 [95% CI]; **below** marks an interval
    wholly under that model's overall macro-F1."""
    blocks = {name: b for name, b in blocks.items() if b and b["by"]}
    if not blocks:
        return []
    first = next(iter(blocks.values()))
    models = list(blocks)
    lines = [
        "## Subgroups",
        "",
        f"Macro-F1 [95% CI] of each subgroup of the {first['split']} films, per metadata column (file format and "
        "bit depth always; manifest columns named in evaluate.subgroups). **below**: the subgroup's interval lies "
        "wholly under the model's overall macro-F1 (its row in the table above): the model does worse there "
        f"than chance explains. Small subgroups have wide intervals; one of fewer than {MIN_FILMS} films has none "
        f"({TOO_FEW}) and is never flagged.",
        "",
    ]
    flagged = []
    for column, groups in first["by"].items():
        lines += [f"`{column}`:", "", "| Value | n | " + " | ".join(models) + " |", "|---|---:|" + "---|" * len(models)]
        for value, g in groups.items():
            cells = []
            for name in models:
                s = blocks[name]["by"][column][value]
                cells.append(with_ci(s, "macro_f1") + (" **below**" if s["below_overall"] else ""))
                if s["below_overall"]:
                    flagged.append(f"{name} on {column} = {value}")
            lines.append(f"| {value} | {g['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    if flagged:
        lines += [f"> **Subgroups below the overall score:** {'; '.join(flagged)}.", ""]
    return lines


def external_markdown(sets: dict[str, dict[str, dict]], folders: dict[str, str]) -> list[str]:
    """The summary's External validation section. `sets[name][model]`: that model's entry of the
    `external` block (stages/lib/results/external_scores.py `score`, plus `ood` for a run), `folders[name]` the set's
    folder. Per set: each model's internal test and external macro-F1 side by side, the drop and its
    CI, ECE before -> after temperature scaling, prediction-set coverage and the OOD flag's share; then
    recall per class, an absent class shown as absent."""
    if not sets:
        return []
    lines = [
        "## External validation",
        "",
        "Every model on labelled films from elsewhere, preprocessed as the internal data (stage "
        "external@<name>) and scored as test (each metrics file's block `external`). Drop = internal test − "
        "external macro-F1 over the classes the external set has, with a 95% bootstrap CI: the model is the "
        "same in both scores, the films are not (each set's films resampled on its own); a CI wholly above 0 "
        "means the model does worse on these films than chance explains. An ensemble has no OOD score of its "
        "own: its runs' rows give theirs (docs/calibration.md).",
        "",
    ]
    for name, models in sets.items():
        lines += external_set_lines(name, models, folders.get(name, "?"))
    return lines


def external_set_lines(name: str, models: dict[str, dict], folder: str) -> list[str]:
    """One external set: its films, each model's scores there beside its internal test, recall per class."""
    first = next(iter(models.values()))
    counts = ", ".join(f"{c} {n}" for c, n in first["counts"].items())
    absent = first["absent_classes"]
    lines = [
        f"### {name}",
        "",
        f"{first['n']} films from `{folder}` ({counts})."
        + (
            f" Absent here: {', '.join(absent)}; the internal test macro-F1 beside it is over the same classes."
            if absent
            else ""
        ),
        "",
        "| Model | Internal test macro-F1 | External macro-F1 [95% CI] | Drop [95% CI] | ECE before → after T "
        "| Prediction-set coverage [95% CI] | OOD flagged |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for model, m in models.items():
        d, ece, cov = m.get("drop") or {}, m["temperature"]["ece"], m["coverage"]
        share = f"{m['ood']['flagged']:.1%}" if isinstance(m.get("ood"), dict) else "n/a"
        lines.append(
            f"| {model} | {fmt(d.get('test_macro_f1'))} | {value_ci(m['macro_f1'], m['macro_f1_ci95'])} | "
            f"{value_ci(d.get('drop'), d.get('drop_ci95'))} | {fmt(ece['before'])} → {fmt(ece['after'])} | "
            f"{value_ci(cov['coverage'], cov['coverage_ci95'])} | {share} |"
        )
    return lines + ["", f"Recall per class on {name}:", ""] + _recall_table(models, list(first["counts"]))


def _recall_table(models: dict[str, dict], classes: list[str]) -> list[str]:
    lines = ["| Model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for model, m in models.items():
        per = m["per_class"]
        lines.append(
            f"| {model} | "
            + " | ".join(
                f"absent ({per[c]['predicted_as']} called {c})" if per[c].get("absent") else fmt(per[c]["recall"])
                for c in classes
            )
            + " |"
        )
    return lines + [""]


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
            f"| {name} | {with_ci(scores[name][b['split']], 'macro_f1')} | "
            f"{value_ci(b['macro_f1'], b['macro_f1_ci95'])} | {value_ci(b['cost']['difference'], b['cost']['ci95'])} | "
            f"{recall} |"
        )
    lines.append("")
    for name, b in blocks.items():
        lines += [f"- {name}: {read_outside_words(b)}"]
    return lines + [""]
