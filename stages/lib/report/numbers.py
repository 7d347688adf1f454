"""How the summary and the model cards write a number: three decimals, or n/a where there is none; a
95% CI as `[low, high]`; and what a class with no film in a split changed."""

from __future__ import annotations

import math

from stages.lib.results.metrics import MACRO_AVERAGES, absent_from


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def pair(ci) -> str:
    """A CI alone: `[0.700, 0.900]`; n/a for a missing end."""
    low, high = ci or (None, None)
    return f"[{fmt(low)}, {fmt(high)}]"


def value_ci(value, ci) -> str:
    """A value with its CI: `0.812 [0.700, 0.900]`."""
    return f"{fmt(value)} {pair(ci)}"


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
