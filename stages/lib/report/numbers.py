"""How the summary and the model cards write a number: three decimals, or n/a where there is none; a
95% CI as `[low, high]`."""

from __future__ import annotations

import math


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def pair(ci) -> str:
    """A CI alone: `[0.700, 0.900]`; n/a for a missing end."""
    low, high = ci or (None, None)
    return f"[{fmt(low)}, {fmt(high)}]"


def value_ci(value, ci) -> str:
    """A value with its CI: `0.812 [0.700, 0.900]`."""
    return f"{fmt(value)} {pair(ci)}"
