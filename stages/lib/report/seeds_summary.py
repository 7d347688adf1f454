"""The summary's sections on how far one result can be trusted: each backbone's seeds (one run against
its seed ensemble) and the paired comparisons of the models (docs/seeds.md)."""

from __future__ import annotations

from stages.lib.results.comparisons import COMPARED, sentence

NAMES = {"macro_f1": "macro-F1", "macro_auroc": "macro AUROC"}


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
    for key in COMPARED:
        lines += (
            [f"{split.capitalize()} {NAMES[key]}:", ""]
            + [f"- {sentence(r['a'], r['b'], key, r[key])}" for r in rows]
            + [""]
        )
    return lines
