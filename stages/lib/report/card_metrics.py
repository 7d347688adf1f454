"""The model card's sections on how the model scores: the headline metrics with CIs and per class,
external validation, subgroups, calibration (temperature scaling, conformal coverage) and the OOD flag;
each block that only some metrics files hold appears when the file holds it."""

from __future__ import annotations

from stages.lib.report.card_format import images, metric_rows
from stages.lib.report.numbers import fmt, pair
from stages.lib.report.summary import absent_lines


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
