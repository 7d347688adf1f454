"""The model card's sections on how the model scores: the headline metrics with CIs and per class,
external validation, subgroups, the lungs hidden, calibration (temperature scaling, conformal coverage) and the OOD flag;
each block that only some metrics files hold appears when the file holds it."""

from __future__ import annotations

from stages.lib.report.card_format import images, metric_rows, with_ci
from stages.lib.report.numbers import fmt, pair, value_ci


def metrics_lines(m: dict, split: str) -> list[str]:
    """The headline metrics on `split` (and val beside test) with CIs, then each class's."""
    s = m[split]
    lines = [
        f"## {split.capitalize()} metrics ({images(s)} images)",
        "",
        "Point estimates with 95% bootstrap confidence intervals `[lo, hi]` (resampling the images).",
        "",
    ]
    lines += metric_rows({split: s, **({"val": m["val"]} if split == "test" and m.get("val") else {})}, "Split")
    lines += ["| Class | Precision | Recall | F1 | AUROC | Images |", "|---|---:|---:|---:|---:|---:|"]
    return (
        lines
        + [
            f"| {c} | {fmt(pc.get('precision'))} | {fmt(pc.get('recall'))} | {fmt(pc.get('f1'))} | "
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
            f"Temperature scaling, T = {fmt(t.get('value'))} fitted on val; {split} before -> after (95% CI):",
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
            f"{fmt(cov.get('mean_set_size'))} {pair(cov.get('mean_set_size_ci95'))}.",
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


def box_words(box: dict) -> str:
    """params' `hide_lungs` box in words: 'rows 5%-95% and columns 5%-95% of the film set to grey level 0'."""
    return (
        f"rows {box['top']:.0%}-{box['bottom']:.0%} and columns {box['left']:.0%}-{box['right']:.0%} of the film "
        f"set to grey level {box['fill']}"
    )


def read_outside_words(block: dict) -> str:
    """The sentence a card and the summary give about the classes kept with the lungs hidden (the block's
    `read_outside_lungs`), the threshold for "most" stated."""
    keep = f"{block['keep_at_least']:.0%}"
    rule = (
        f"at least {keep} of its recall and of its margin over the share of other classes' films called it "
        "(a class every hidden film is called keeps its recall, not its margin)"
    )
    outside = block.get("read_outside_lungs") or []
    answer = one_answer(block)
    if answer is not None:  # the box pushed every film to one class: the fill speaks, not the rim
        return (
            f"With the lungs hidden this model calls every film {answer}, so no class keeps {rule}; a film with a "
            "flat centre is unlike any it was trained on, and this test cannot say what it reads from the rest "
            "(the pixel shortcut can)."
        )
    if not outside:
        return f"No class keeps {rule} with the lungs hidden: none is read from outside the lungs by that rule."
    kept = ", ".join(f"{c} {block['per_class'][c]['kept']:.0%}" for c in outside)
    if len(outside) == 1:
        said = f"**{outside[0]} keeps {block['per_class'][outside[0]]['kept']:.0%} of its recall with the lungs hidden: this model reads that class from outside the lungs.**"
    else:
        said = (
            f"**{', '.join(outside[:-1])} and {outside[-1]} keep most of their recall with the lungs hidden ({kept}): "
            "this model reads those classes from outside the lungs.**"
        )
    return f"{said} A class counts as read from outside the lungs when it keeps {rule}."


def one_answer(block: dict) -> str | None:
    """The class a lungs-hidden block's model called every film, if it called them all one class."""
    classes = [c for c, v in block["per_class"].items() if not v.get("absent")]
    called = [
        c
        for c in classes
        if block["per_class"][c]["recall"] == 1 and block["per_class"][c]["other_films_called_it"] == 1
    ]
    return called[0] if called and len(classes) > 1 else None


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
