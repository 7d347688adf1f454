"""Subgroup metrics: each value of a film-metadata column (a manifest's extra columns, and every film's
file format and bit depth) scored on its own, with its n and bootstrap CIs, and a flag where the
subgroup's macro-F1 interval lies wholly below the model's overall macro-F1 on the split.

The metadata is read from the cache's index (<split>.csv after filename,label), written by preprocess.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from stages.lib.core.errors import UserError
from stages.lib.core.names import UNLABELED
from stages.lib.data.dataset import cache_files
from stages.lib.data.layouts import BUILT_IN_METADATA
from stages.lib.results.metrics import bootstrap_ci, ci_metrics

INDEX_COLUMNS = ("filename", "label")
# A smaller subgroup gets no interval and no flag: a percentile bootstrap over a handful of films draws
# few distinct resamples (one film: always itself, the interval [x, x]) and its interval is far
# narrower than the truth, so it would flag noise.
MIN_FILMS = 10
TOO_FEW = "too few films"  # how the summary and the cards show it


def read_metadata(cache_dir: str | os.PathLike, split: str) -> dict[str, list[str]]:
    """{column: value per film, in the cache's order} for every metadata column of a cached split."""
    _, index = cache_files(cache_dir, split)
    with open(index, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in (rows[0] if rows else {}) if c not in INDEX_COLUMNS]
    return {c: [r[c] for r in rows] for c in columns}


def columns_to_score(metadata: dict[str, list[str]], named, where: str) -> list[str]:
    """The built-in columns present, then the columns named in params (evaluate.subgroups); a named
    column the films do not have is refused, naming it and the columns they do have."""
    missing = next((c for c in named if c not in metadata), None)
    if missing is not None:
        have = [c for c in metadata if c not in BUILT_IN_METADATA] or ["none besides " + ", ".join(BUILT_IN_METADATA)]
        raise UserError(
            f"evaluate.subgroups names column {missing!r}, which the films of {where} do not have "
            f"(metadata columns: {', '.join(have)}); add it to manifest.csv and rerun preprocess, or "
            "remove it from evaluate.subgroups"
        )
    return [c for c in BUILT_IN_METADATA if c in metadata] + [c for c in named if c not in BUILT_IN_METADATA]


def group_scores(labels: np.ndarray, probs: np.ndarray, classes, resamples: int, seed: int) -> dict:
    """n, images per class, and each metric with a CI (metrics.ci_metrics: accuracy, macro-F1, macro AUROC)
    with its 95% bootstrap CI, of one subgroup; the CIs null with `ci_note` under MIN_FILMS films."""
    counts = np.bincount(labels, minlength=len(classes))
    out = {"n": int(len(labels)), "per_class_n": {c: int(k) for c, k in zip(classes, counts)}}
    out.update({m.key: m.value(labels, probs) for m in ci_metrics()})
    if len(labels) < MIN_FILMS:
        note = f"{TOO_FEW} for an interval (fewer than {MIN_FILMS}): none, and never flagged"
        return {**out, **{f"{m.key}_ci95": None for m in ci_metrics()}, "ci_note": note}
    for m in ci_metrics():
        out[f"{m.key}_ci95"] = bootstrap_ci(labels, probs, m.batch, resamples, seed)
    return out


# params: the films (labels, probabilities, metadata), what they are grouped and scored by (columns, classes),
# the overall score compared with, and the bootstrap (resamples, seed).
def subgroup_scores(
    labels: np.ndarray,
    probs: np.ndarray,
    metadata: dict[str, list[str]],
    columns,
    classes,
    overall_macro_f1: float,
    resamples: int,
    seed: int,
) -> dict:
    """{column: {value: group_scores + below_overall}} over the labelled films; `below_overall` is true
    when the subgroup's macro-F1 95% CI lies wholly below `overall_macro_f1` (never without a CI)."""
    known = labels != UNLABELED
    out = {}
    for column in columns:
        values = np.array(metadata[column], dtype=object)[known]
        out[column] = {}
        for value in sorted(set(values.tolist()), key=str):
            mine = values == value
            scores = group_scores(labels[known][mine], probs[known][mine], classes, resamples, seed)
            high = (scores["macro_f1_ci95"] or [None, None])[1]
            scores["below_overall"] = bool(high is not None and high < overall_macro_f1)
            out[column][value if value != "" else "(empty)"] = scores
    return out


def subgroups_block(
    cache_dir: str | os.PathLike, split: str, scored: tuple, overall_macro_f1: float, classes, e
) -> dict:
    """A model's `subgroups` block on a cached split (evaluate's, and the report's for the seed ensembles
    and the ensemble): `scored` its (labels, probabilities) there, `e` params' evaluate section (the
    columns named, the bootstrap)."""
    metadata = read_metadata(cache_dir, split)
    columns = columns_to_score(metadata, e.subgroups, f"{cache_dir}/{split}.csv")
    by = subgroup_scores(*scored, metadata, columns, classes, overall_macro_f1, e.bootstrap_resamples, e.seed)
    return {"split": split, "overall_macro_f1": overall_macro_f1, "by": by}
