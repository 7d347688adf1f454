"""Stage `pixel_shortcut`: the cache with the lungs hidden -> a classifier that sees only the rest of each film
(stages/lib/audit/pixel_shortcut.py), fitted on train, chosen on val, scored on val, test and each external set
as the networks are: its per-image predictions (predictions/pixel_shortcut/), its metrics with CIs and recall
per class (metrics/pixel_shortcut.json) and its headline macro-F1 (the DVC metric beside the metadata
shortcut's). The report compares every model with it image by image."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages.lib.audit import pixel_shortcut as pixels
from stages.lib.core import provenance
from stages.lib.core.errors import cli
from stages.lib.core.files import write_json
from stages.lib.core.names import SCORED_SPLITS, UNLABELED
from stages.lib.data.dataset import CachedSplit, verify_cache
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config
from stages.lib.results import external_scores as ext
from stages.lib.results.evaluation import write_and_score, write_predictions
from stages.lib.results.metrics import absent_from, split_metrics


def _films(cache: str | Path, split: str, cfg: Config) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(file names, labels, features) of one cached split."""
    data = CachedSplit(cache, split)
    return data.names, data.labels, pixels.features(data.images, cfg.hide_lungs, cfg.pixel_shortcut)


def pixel_shortcut(cache: str, external_root: str, predictions: str, cfg: Config) -> dict:
    """Fit, choose, predict and score; write the predictions under `predictions` and return the metrics report."""
    meta = verify_cache(cache)
    classes, e = meta["classes"], cfg.evaluate
    caches = ext.open_caches(external_root, list(cfg.external), meta)  # refused before any fitting
    films = {split: _films(cache, split, cfg) for split in ("train", *SCORED_SPLITS)}
    (_, y, x), (_, y_val, x_val) = films["train"], films["val"]
    known = y != UNLABELED
    name, model, tried = pixels.fit_and_choose((x[known], y[known]), (x_val, y_val), cfg.pixel_shortcut)
    outputs = {split: (n, yy, pixels.probabilities(model, xx, len(classes))) for split, (n, yy, xx) in films.items()}
    outputs.pop("train")
    report = {
        "sees": pixels.SEES.format(grid=cfg.pixel_shortcut.grid, bins=cfg.pixel_shortcut.bins),
        "hide_lungs": cfg.hide_lungs.model_dump(),
        "chosen": name,
        "val_macro_f1_of_each_candidate": tried,
    }
    report.update(write_and_score(outputs, classes, Path(predictions), e))
    on_external = {}
    for set_name, (set_cache, split) in caches.items():
        names, labels, x_set = _films(set_cache, split, cfg)
        on_external[set_name] = (names, labels, pixels.probabilities(model, x_set, len(classes)))
    write_predictions({ext.predictions_split(n): o for n, o in on_external.items()}, classes, Path(predictions))
    report["external"] = {n: external_metrics(o[1:], classes, e) for n, o in on_external.items()}
    report["provenance"] = provenance.stamp(
        {k: getattr(cfg, k).model_dump() for k in ("hide_lungs", "pixel_shortcut", "evaluate")}, meta.get("data")
    )
    return report


def external_metrics(labels_probs: tuple[np.ndarray, np.ndarray], classes, e) -> dict:
    """One external set's metrics as a network's (a class without films there marked absent, not scored 0)."""
    labels, probs = labels_probs
    where = "the external set"
    m = split_metrics(labels, probs, classes, e.bootstrap_resamples, e.seed, e.calibration_bins, where=where)
    return {**m, "n": int(len(labels)), "absent_classes": absent_from(m)}


def headline(report: dict) -> dict:
    """Its macro-F1 on each scored split, in the shape of the metadata shortcut's headline."""
    return {split: {"macro_f1": report[split]["macro_f1"]} for split in SCORED_SPLITS if report.get(split)}


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", required=True, help="the preprocess cache")
    parser.add_argument(
        "--external", required=True, help="folder of the external sets' caches (those named in params are scored)"
    )
    parser.add_argument("--predictions", required=True, help="folder for val.csv, test.csv and external/<name>.csv")
    parser.add_argument("--metrics", required=True, help="its metrics JSON to write")
    parser.add_argument("--headline", required=True, help="headline JSON to write: its macro-F1 per split")
    args = parser.parse_args()
    report = pixel_shortcut(args.cache, args.external, args.predictions, load_params())
    write_json(args.metrics, report)
    write_json(args.headline, headline(report))
    for split in SCORED_SPLITS:
        if report.get(split):
            print(
                f"pixel shortcut ({split}): the film outside the lungs alone reaches macro-F1 "
                f"{report[split]['macro_f1']:.3f} ({report['chosen']})"
            )


if __name__ == "__main__":
    main()
