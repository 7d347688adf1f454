"""The model card's sections on what the model is and what it was made from: the model, its recipe (the
params it was trained with), the data (counts, grouping, leakage, licences) and the two shortcuts beside it (file
metadata, the film outside the lungs)."""

from __future__ import annotations

from stages.lib.core.names import PIXEL_SHORTCUT, SHORTCUT
from stages.lib.report.card_format import data_stamp, with_ci
from stages.lib.results.comparisons import stronger


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
