"""How a model card writes its numbers (stages/lib/report/numbers.py): a metric with its 95% CI, the
headline metrics of scored sets as a table, and the data's DVC stamp as one phrase."""

from __future__ import annotations

from stages.lib.report.numbers import fmt, value_ci
from stages.lib.results.subgroups import TOO_FEW

HEADLINE = (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"), ("macro_auroc", "Macro AUROC"))


def with_ci(m: dict, key: str) -> str:
    """`m[key]` with its 95% CI `m[key_ci95]`: `0.812 [0.700, 0.900]`; `0.812 (too few films)` for a
    subgroup too small for one."""
    if m.get(f"{key}_ci95") is None and m.get("ci_note"):
        return f"{fmt(m.get(key))} ({TOO_FEW})"
    return value_ci(m.get(key), m.get(f"{key}_ci95"))


def images(m: dict) -> int | None:
    """How many images a metrics block scored."""
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
        + [
            f"| {name} | {images(m) or 'n/a'} | " + " | ".join(with_ci(m, k) for k, _ in HEADLINE) + " |"
            for name, m in rows
        ]
        + [""]
    )


def data_stamp(d) -> str:
    """The data's DVC stamp as one phrase: path, hash, where the hash was read."""
    if not isinstance(d, dict):
        return "not recorded (the data is not tracked by DVC)" if d is None else f"`{d}`"
    return f"`{d.get('path')}` (DVC hash `{d.get('md5')}`, from {d.get('from')})"
