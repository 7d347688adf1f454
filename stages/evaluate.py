"""Stage `evaluate@<backbone>-<seed>`: one run's best checkpoint -> its metrics
(metrics/<backbone>/seed<seed>.json), per-image predictions and Grad-CAM examples; each external set
named in params (its cache from external@<name>) scored as test is (block `external`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stages.lib.core import provenance
from stages.lib.core.errors import cli
from stages.lib.core.files import read_json, write_json, write_text
from stages.lib.core.names import SCORED_SPLITS
from stages.lib.data.dataset import CachedSplit, verify_cache
from stages.lib.model import gradcam
from stages.lib.model.inference import load_model, predict_split
from stages.lib.model.runtime import channels_last, describe, pick_device, precision, resolve_workers
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Evaluate, Train
from stages.lib.report import cards
from stages.lib.report.plots import gradcam_grid, save_figure
from stages.lib.results import external_scores as ext
from stages.lib.results import ood, posthoc, subgroups
from stages.lib.results.evaluation import predictions_csv, write_and_score


def evaluate(
    backbone: str,
    cache_dir: str,
    model_path: str,
    metrics_path: str,
    predictions_dir: str,
    gradcam_path: str,
    e: Evaluate,
    t: Train | None = None,
    ood_path: str | None = None,
    calibration_path: str | None = None,
    external: list[str] = (),
    external_dir: str = "cache_external",
) -> dict:
    """Score the best checkpoint on val and test; `e` is params.yaml's `evaluate` section, `t` its
    `train` section: inference runs as training did (its precision and DataLoader workers). With
    `ood_path`, fit the OOD score (stages/lib/results/ood.py) there and record the share of films it flags.
    The post-hoc fit on val (temperature, prediction sets, operating points) goes to `calibration_path`.
    Each set in `external` (its cache `external_dir`/<name>) is scored as test: predictions in
    `predictions_dir`/external/<name>.csv, numbers in the block `external`."""
    cache_meta = verify_cache(cache_dir)  # a damaged cache is refused before the model is loaded
    classes = cache_meta["classes"]
    caches = ext.open_caches(external_dir, external, cache_meta)  # refused before any inference
    model, meta = load_model(model_path, backbone, cache_meta["preprocess"], classes)
    device = pick_device()
    t = t or Train(precision="fp32", num_workers=0)
    workers = resolve_workers(t.num_workers, device)
    autocast, _ = precision(t.precision, device)
    print(f"{backbone}: {describe(device, t.precision, workers).line()}", flush=True)
    model.to(device)
    if channels_last(device):
        model.to(memory_format=torch.channels_last)
    outputs = {
        split: predict_split(
            model, cache_dir, split, e.batch_size, device, hflip=e.tta_hflip, autocast=autocast, workers=workers
        )
        for split in SCORED_SPLITS
    }
    report = write_and_score(outputs, classes, Path(predictions_dir), e)
    fitted, blocks = posthoc.fit_and_score({split: o[1:] for split, o in outputs.items()}, classes, e)
    report.update(blocks)
    test = (outputs["test"][1], outputs["test"][2])
    report["external"] = {}
    for name, (ext_cache, ext_split) in caches.items():
        names, labels, probs = predict_split(
            model,
            str(ext_cache),
            ext_split,
            e.batch_size,
            device,
            hflip=e.tta_hflip,
            autocast=autocast,
            workers=workers,
        )
        write_text(
            Path(predictions_dir) / f"{ext.predictions_split(name)}.csv", predictions_csv(names, labels, probs, classes)
        )
        report["external"][name] = {**ext.facts(ext_cache), **ext.score(labels, probs, classes, fitted, test, e)}
    report["subgroups"] = subgroup_block(cache_dir, outputs, report, classes, e)
    shown = "test" if report["test"] is not None else "val"  # Grad-CAM needs true labels to pick examples
    save_figure(
        gradcam_figure(model, backbone, cache_dir, shown, classes, e.gradcam_per_class, outputs[shown][2]),
        gradcam_path,
        synthetic=bool(cache_meta.get("synthetic")),
    )
    report.update(seed=meta.get("seed"), best_epoch=meta["epoch"], epochs_run=meta["epochs_run"], tta_hflip=e.tta_hflip)
    trained = meta.get("provenance") or {"params": {}, "data": None, "git": None}  # checkpoints before the stamp
    report["provenance"] = {
        **provenance.stamp({**trained["params"], "evaluate": e.model_dump()}, trained["data"]),
        "trained_at": trained["git"],
    }
    if ood_path is not None:
        others = {ext.predictions_split(name): (str(c), split) for name, (c, split) in caches.items()}
        shares = ood.fit_and_save(
            model, backbone, cache_dir, e.batch_size, device, ood_path, len(classes), others=others
        )["flagged"]
        report["ood"] = {"flagged": shares, "keep": ood.KEEP}
        for name in caches:
            report["external"][name]["ood"] = {"flagged": shares[ext.predictions_split(name)], "keep": ood.KEEP}
    write_json(metrics_path, report)
    write_json(calibration_path or posthoc.sidecar_path(model_path), fitted)
    return report


def subgroup_block(cache_dir: str, outputs: dict, report: dict, classes, e: Evaluate) -> dict:
    """The `subgroups` block: per metadata column, each value's n and metrics with CIs on test (val
    when test labels are hidden), flagged where its macro-F1 CI lies wholly below the overall."""
    split = "test" if report["test"] is not None else "val"
    metadata = subgroups.read_metadata(cache_dir, split)
    columns = subgroups.columns_to_score(metadata, e.subgroups, f"{cache_dir}/{split}.csv")
    _, labels, probs = outputs[split]
    overall = report[split]["macro_f1"]
    return {
        "split": split,
        "overall_macro_f1": overall,
        "by": subgroups.subgroup_scores(
            labels, probs, metadata, columns, classes, overall, e.bootstrap_resamples, e.seed
        ),
    }


def gradcam_figure(model, backbone: str, cache_dir: str, split: str, classes, per_class: int, probs):
    """Grad-CAM of the predicted class for correct and misclassified images of each class in `split`
    (`per_class` a class); no heatmap when the target layer's map is too coarse (gradcam.too_coarse)."""
    data = CachedSplit(cache_dir, split)
    predicted = probs.argmax(1)
    rows = gradcam.pick_examples(data.labels, predicted, per_class, len(classes))
    picks = [i for row in rows for i in row]
    images = torch.stack([data[i][0] for i in picks])
    note = gradcam.too_coarse(backbone, images.shape[-1], gradcam.feature_map_size(model, backbone, images.shape[-1]))
    heat = (
        [None] * len(picks) if note else gradcam.heatmaps(model, backbone, images, [int(predicted[i]) for i in picks])
    )
    example = {
        i: {
            "image": images[k, 0].numpy(),
            "heat": heat[k],
            "caption": _caption(classes, data.labels[i], predicted[i], probs[i]),
        }
        for k, i in enumerate(picks)
    }
    examples = [[example[i] for i in row] for row in rows]
    kind = "Grad-CAM of the predicted class" if note is None else "Grad-CAM examples"
    return gradcam_grid(examples, f"{backbone}: {kind}, correct and misclassified {split} images", note)


def _caption(classes, true: int, predicted: int, probs) -> str:
    verdict = "correct" if true == predicted else "MISCLASSIFIED"
    return f"{verdict}: true {classes[true]}\npredicted {classes[predicted]} (p={probs[predicted]:.2f})"


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics", required=True, help="detail metrics JSON to write (this run's)")
    parser.add_argument("--predictions", required=True, help="folder for val.csv and test.csv")
    parser.add_argument("--gradcam", required=True, help="Grad-CAM figure (PNG) to write")
    parser.add_argument("--ood", help="OOD score to fit and write (JSON beside the model: <model>.ood.json)")
    parser.add_argument(
        "--external",
        default="cache_external",
        help="folder of the external sets' caches (<name>/, from external@<name>); those named in "
        "params.yaml `external` are scored",
    )
    parser.add_argument(
        "--calibration",
        help="the val fit to write beside the model (default: the model's path "
        "with .calibration.json, where cxr4-predict looks)",
    )
    cards.add_arguments(parser)
    args = parser.parse_args()
    cfg = load_params()
    r = evaluate(
        args.backbone,
        args.cache,
        args.model,
        args.metrics,
        args.predictions,
        args.gradcam,
        cfg.evaluate,
        cfg.train,
        args.ood,
        args.calibration,
        list(cfg.external),
        args.external,
    )
    if args.card:
        cards.write_card(
            args.card,
            f"{args.backbone}, seed {r['seed']}",
            args.metrics,
            args.data_report,
            args.notice,
            bool(read_json(Path(args.cache) / "meta.json").get("synthetic")),
        )
    print(
        f"{args.backbone}: "
        + " | ".join(
            f"{s} acc {r[s]['accuracy']:.4f} macro-F1 {r[s]['macro_f1']:.4f}" if r[s] else f"{s}: labels hidden"
            for s in SCORED_SPLITS
        )
    )


if __name__ == "__main__":
    main()
