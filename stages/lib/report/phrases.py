"""What the summary and the model cards both write, written once: a number (three decimals, or n/a where
there is none), a 95% CI as `[low, high]`, a metric with its CI, what a class with no film in a split
changed, and the lungs hidden: the box in words and which classes a model reads from outside the lungs."""

from __future__ import annotations

import math

from stages.lib.results.metrics import METRICS, absent_from, macro_labels
from stages.lib.results.subgroups import TOO_FEW


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def pair(ci, digits: int = 3) -> str:
    """A CI alone: `[0.700, 0.900]`; n/a for a missing end."""
    low, high = ci or (None, None)
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def value_ci(value, ci, digits: int = 3) -> str:
    """A value with its CI: `0.812 [0.700, 0.900]`."""
    return f"{fmt(value, digits)} {pair(ci, digits)}"


def with_ci(m: dict, key: str) -> str:
    """`m[key]` with its 95% CI `m[key_ci95]` in the metric's digits (metrics.METRICS):
    `0.812 [0.700, 0.900]`; `0.812 (too few films)` for a subgroup too small for one."""
    digits = METRICS[key].digits if key in METRICS else 3
    if m.get(f"{key}_ci95") is None and m.get("ci_note"):
        return f"{fmt(m.get(key), digits)} ({TOO_FEW})"
    return value_ci(m.get(key), m.get(f"{key}_ci95"), digits)


def images(m: dict) -> int | None:
    """How many images a metrics block scored."""
    pc = m.get("per_class")
    return sum(c["support"] for c in pc.values()) if isinstance(pc, dict) else m.get("n")


def absent_lines(m: dict, split: str) -> list[str]:
    """What a class with no film in the split changed: which macro averages are over fewer classes."""
    absent = absent_from(m)
    if not absent:
        return []
    present = [c for c in m["per_class"] if c not in absent]
    return [
        f"> **Not in {split}: {', '.join(absent)}.** No precision, recall, F1 or AUROC exists for it (n/a, "
        f"not 0). The {split} macro averages ({', '.join(macro_labels())}) are over the {len(present)} classes "
        f"present ({', '.join(present)}); accuracy and the weighted averages are unchanged.",
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
