"""Stage `external@<name>`: one external labelled dataset (params.yaml `external`) -> its own cache,
every run's, every seed ensemble's and the all-model ensemble's predictions and metrics on it
(metrics/external/<name>.json, block `external`), and a page putting the internal test beside it
with the drop and its CI (metrics/external/<name>.md). docs/calibration.md says how to read them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages.lib import external as ext
from stages.lib import posthoc, provenance
from stages.lib.config import Config
from stages.lib.data import verify_cache
from stages.lib.errors import UserError, cli
from stages.lib.evaluation import predictions_csv, read_runs
from stages.lib.inference import load_model, predict_split
from stages.lib.io import load_params, read_json, write_json, write_text
from stages.lib.metrics import split_metrics
from stages.lib.posthoc_summary import external_markdown
from stages.lib.runtime import pick_device


def external(cfg: Config, name: str, data_dir: str, cache_dir: str, cache_meta: dict, models_dir: str,
             predictions_dir: str, out_dir: str, metrics_path: str, summary_path: str) -> dict:
    """Preprocess `data_dir` as the internal data was, score every model on it, write the results."""
    e, classes = cfg.evaluate, cache_meta["classes"]
    if cache_meta["preprocess"] != cfg.preprocess.model_dump():
        raise UserError(f"the internal cache was preprocessed with {cache_meta['preprocess']}, params.yaml says "
                        f"{cfg.preprocess.model_dump()}; rerun the pipeline (dvc repro)")
    meta = ext.build_external_cache(data_dir, cache_dir, cfg.preprocess, cfg.data)
    verify_cache(cache_dir)
    device = pick_device()
    runs: dict[str, np.ndarray] = {}  # "<backbone>/seed<seed>" -> external probabilities
    fits: dict[str, dict] = {}
    labels = None
    for b in cfg.backbones:
        for s in cfg.seeds:
            path = Path(models_dir) / b / f"seed{s}.pt"
            model, _ = load_model(path, b, cache_meta["preprocess"], classes)
            names, labels, probs = predict_split(model.to(device), cache_dir, ext.SPLIT, e.batch_size, device,
                                                 hflip=e.tta_hflip)
            runs[f"{b}/seed{s}"] = probs
            write_text(Path(out_dir) / b / f"seed{s}.csv", predictions_csv(names, labels, probs, classes))
            fits[f"{b}/seed{s}"] = posthoc.load(path, classes) or posthoc.fit(
                *read_runs([Path(predictions_dir) / b / "seeds" / f"seed{s}"], "val", classes)[1:], classes, e)
    # the seed ensembles and the all-model ensemble: means of their runs, as combine and ensemble make them
    members = {b: [f"{b}/seed{s}" for s in cfg.seeds] for b in cfg.backbones}
    members["ensemble"] = list(runs)
    folders = {key: Path(predictions_dir) / key.split("/")[0] / "seeds" / key.split("/")[1] for key in runs}
    models = {key: [key] for key in runs} | members
    present = [k for k, c in enumerate(classes) if (labels == k).any()]
    absent = ext.absent_classes(labels, classes)
    scored = {}
    for model_name, keys in models.items():
        probs = np.mean([runs[k] for k in keys], 0)
        val = read_runs([folders[k] for k in keys], "val", classes)
        test_labels, test_runs = read_runs([folders[k] for k in keys], "test", classes)[1:]
        fit = fits[model_name] if model_name in fits else posthoc.fit(val[1], val[2].mean(0), classes, e)
        if model_name not in fits:
            write_text(Path(out_dir) / f"{model_name}.csv", predictions_csv(names, labels, probs, classes))
        m = ext.mark_absent(split_metrics(labels, probs, classes, e.bootstrap_resamples, e.seed, e.calibration_bins),
                            probs, classes, absent)
        m.update(posthoc.score(fit, labels, probs, e))
        known = test_labels >= 0
        if known.any():
            m["drop"] = ext.drop(ext.restrict(test_labels[known], test_runs.mean(0)[known], present),
                                 (labels, probs), e.bootstrap_resamples, e.seed)
        scored[model_name] = m
    report = {"external": {"name": name, "path": data_dir, "layout": meta["layout"], "n": int(len(labels)),
                           "counts": meta["counts"][ext.SPLIT], "absent_classes": absent,
                           "synthetic": meta["synthetic"], "models": scored},
              "provenance": provenance.stamp({"preprocess": cfg.preprocess.model_dump(), "data": cfg.data.model_dump(),
                                              "evaluate": e.model_dump(), "backbones": list(cfg.backbones),
                                              "seeds": list(cfg.seeds)}, meta["data"])}
    write_json(metrics_path, report)
    write_text(summary_path, "\n".join(external_markdown(report["external"], list(cfg.backbones) + ["ensemble"])))
    return report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the external set's name (its key under `external`)")
    parser.add_argument("--data", required=True, help="its folder, in any layout preprocess reads")
    parser.add_argument("--cache", required=True, help="its own preprocessed cache to write")
    parser.add_argument("--cache-meta", required=True, help="the internal cache's meta.json (classes, preprocessing)")
    parser.add_argument("--models", required=True, help="folder of <backbone>/seed<seed>.pt and their .calibration.json")
    parser.add_argument("--predictions", required=True, help="folder of the runs' val/test predictions")
    parser.add_argument("--out", required=True, help="folder for the per-film predictions on the external set")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--summary", required=True, help="Markdown page to write (internal test beside external)")
    args = parser.parse_args()
    cfg = load_params()
    r = external(cfg, args.name, args.data, args.cache, read_json(args.cache_meta), args.models, args.predictions,
                 args.out, args.metrics, args.summary)["external"]
    print(f"external {args.name} ({r['n']} films{', absent: ' + ', '.join(r['absent_classes']) if r['absent_classes'] else ''}): "
          + " | ".join(f"{m} macro-F1 {r['models'][m]['macro_f1']:.4f}" for m in [*cfg.backbones, "ensemble"]))


if __name__ == "__main__":
    main()
