"""External validation, the scores: each model on an external set's cache (stages/external.py
builds it), scored as test is (evaluate for a run, combine and ensemble for the ensembles, report for
the summary), and compared with the internal test.

A class of data.classes with no film in the set is reported as absent, never as a score of 0; the
internal test score it is compared with is taken over the same classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json
from stages.lib.data.dataset import UNLABELED, verify_cache
from stages.lib.params.schema import Evaluate
from stages.lib.results import posthoc
from stages.lib.results.evaluation import read_runs
from stages.lib.results.metrics import METRICS, absent_from, interval, macro_f1, split_metrics

KEY = "external"  # predictions/<model>/external/<name>.csv; the OOD score's share on it: flagged["external/<name>"]


def predictions_split(name: str) -> str:
    """The set's per-film predictions beside a model's val.csv and test.csv: external/<name>.csv; also
    its key among the OOD score's shares flagged."""
    return f"{KEY}/{name}"


def open_caches(root: str | os.PathLike, names, cache_meta: dict) -> dict[str, tuple[Path, str]]:
    """{name: (its cache under `root`, the cache's one split)} for each external set named in params,
    verified and refused unless preprocessed as the internal cache was (a model scored on other pixels
    would be scored wrong)."""
    out = {}
    for name in names:
        path = Path(root) / name
        if not (path / "meta.json").is_file():
            raise UserError(
                f"{path} not found: the external set {name!r} (params.yaml `external`) is not "
                f"preprocessed yet; run dvc repro external@{name}"
            )
        meta = verify_cache(path)
        if meta["preprocess"] != cache_meta["preprocess"] or meta["classes"] != cache_meta["classes"]:
            raise UserError(
                f"{path} was preprocessed with {meta['preprocess']} (classes {meta['classes']}), the "
                f"internal cache with {cache_meta['preprocess']} (classes {cache_meta['classes']}); "
                f"rerun dvc repro external@{name}"
            )
        out[name] = (path, next(iter(meta["counts"])))  # stages/external.py writes one split
    return out


def facts(cache_dir: str | os.PathLike) -> dict:
    """Where the set came from, from its cache's meta.json (evaluate records it for each run)."""
    meta = read_json(Path(cache_dir) / "meta.json")
    return {"layout": meta["layout"], "synthetic": meta["synthetic"], "data": meta["data"]}


def score_sets(
    caches: dict[str, tuple[Path, str]],
    outputs: dict,
    classes,
    fitted: dict,
    test: tuple[np.ndarray, np.ndarray],
    e: Evaluate,
) -> dict:
    """The `external` block of one run: for each set in `caches` (open_caches) where it came from
    (`facts`) and its predictions `outputs[name]` = (names, labels, probs) scored by `score`."""
    return {
        name: {**facts(cache), **score(outputs[name][1], outputs[name][2], classes, fitted, test, e)}
        for name, (cache, _) in caches.items()
    }


def score_runs(
    folders: list[Path], names, classes, fitted: dict, test: tuple[np.ndarray, np.ndarray], e: Evaluate
) -> dict:
    """The `external` block of an ensemble: the mean of its runs' probabilities on each set in `names`,
    read from the runs' predictions folders as their test is, scored by `score`."""
    out = {}
    for name in names:
        _, labels, runs = read_runs(folders, predictions_split(name), classes)
        out[name] = score(labels, runs.mean(0), classes, fitted, test, e)
    return out


def score(
    labels: np.ndarray, probs: np.ndarray, classes, fitted: dict, test: tuple[np.ndarray, np.ndarray], e: Evaluate
) -> dict:
    """One model on one external set, scored as test is: metrics with CIs (an absent class marked
    absent: metrics.absent_entry), its val fit judged there (temperature before/after, prediction-set
    coverage, operating points), and the drop from the internal test `test` = (labels, probabilities)
    (None when test labels are hidden)."""
    where = "the external set"
    m = split_metrics(labels, probs, classes, e.bootstrap_resamples, e.seed, e.calibration_bins, where=where)
    absent = absent_from(m)
    present = [k for k, c in enumerate(classes) if c not in absent]
    m.update(posthoc.score(fitted, labels, probs, e))
    m.update(
        n=int(len(labels)), counts={c: int((labels == k).sum()) for k, c in enumerate(classes)}, absent_classes=absent
    )
    known = test[0] != UNLABELED
    m["drop"] = (
        drop(restrict(test[0][known], test[1][known], present), (labels, probs), e.bootstrap_resamples, e.seed)
        if known.any()
        else None
    )
    return m


def restrict(labels: np.ndarray, probs: np.ndarray, present: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The films whose true class is in `present` (the internal test, over the external set's classes)."""
    mine = np.isin(labels, present)
    return labels[mine], probs[mine]


def drop(
    test: tuple[np.ndarray, np.ndarray], external: tuple[np.ndarray, np.ndarray], resamples: int, seed: int
) -> dict:
    """Internal test macro-F1 minus external macro-F1 of one model (over the classes the external set
    has), with a 95% bootstrap CI of the difference. Paired is the model: both scores are of the same
    probabilities' argmax, so every draw holds the model fixed. Not paired are the films: the sets
    hold different films, so each draw resamples each set's films on its own (with replacement, its
    own size) and subtracts the two scores."""
    (yt, pt), (ye, pe) = test, external
    point_t, point_e = macro_f1(yt, pt.argmax(1)), macro_f1(ye, pe.argmax(1))
    out = {"test_macro_f1": point_t, "external_macro_f1": point_e, "drop": point_t - point_e, "drop_ci95": [None, None]}
    if resamples and len(yt) and len(ye):
        rng = np.random.default_rng(seed)
        it = rng.integers(0, len(yt), (resamples, len(yt)))
        ie = rng.integers(0, len(ye), (resamples, len(ye)))
        f1 = METRICS["macro_f1"].batch
        draws = f1(yt[it], pt[it]) - f1(ye[ie], pe[ie])
        out["drop_ci95"] = interval(out["drop"], draws, (-1.0, 1.0))
    return out
