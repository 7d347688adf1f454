"""Stage `evaluate@<backbone>-<seed>`: one run's best checkpoint -> its metrics
(metrics/<backbone>/seed<seed>.json), per-image predictions and Grad-CAM examples; each external set
named in params (its cache from external@<name>) scored as test is (block `external`); the test films
scored again with the lungs hidden (block `lungs_hidden`); the post-hoc fit on val beside the model, where
cxr4-predict looks; the OOD score; and the run's model card.

`evaluate` is the stage, top to bottom: the cache checked and the model loaded, val and test scored and
their predictions written, the post-hoc fit on val judged on each split, the external sets scored, the
subgroups, the lungs hidden and the Grad-CAM examples on the shown split, the run's provenance, the OOD
score fitted, and the files written."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from stages.lib.core import provenance
from stages.lib.core.errors import cli
from stages.lib.core.files import read_json, write_json
from stages.lib.core.names import SCORED_SPLITS
from stages.lib.data.dataset import CachedSplit, verify_cache
from stages.lib.data.transforms import LungsHidden
from stages.lib.model import gradcam
from stages.lib.model.features import measure
from stages.lib.model.inference import Scorer, load_model
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Evaluate, HideLungs, Train
from stages.lib.report import cards
from stages.lib.report.plots import gradcam_grid, save_figure
from stages.lib.results import external_scores as ext
from stages.lib.results import lungs_hidden, ood, posthoc, subgroups
from stages.lib.results.evaluation import shown_split_of, write_and_score, write_predictions


@dataclass(frozen=True)
class RunFiles:
    """One run's files, as evaluate's command line (dvc.yaml) names them."""

    cache: str  # the preprocess cache
    model: str  # the run's best checkpoint
    metrics: str  # its metrics JSON, to write
    predictions: str  # folder for val.csv, test.csv and external/<name>.csv
    gradcam: str  # the Grad-CAM figure (PNG), to write
    ood: str | None = None  # the OOD score to fit and write (none fitted without)
    calibration: str | None = None  # the val fit (default: beside the model, where cxr4-predict looks)
    external: str = "cache_external"  # folder of the external sets' caches (<name>/, from external@<name>)


# params: the run (backbone, files) and params' sections it is scored with (evaluate, train, external, hide_lungs).
def evaluate(
    backbone: str,
    files: RunFiles,
    e: Evaluate,
    t: Train | None = None,
    external: list[str] = (),
    hide: HideLungs | None = None,
) -> dict:
    """Score the best checkpoint on val and test; `e` is params.yaml's `evaluate` section, `t` its
    `train` section: inference runs as training did (its precision and DataLoader workers). With
    `files.ood`, fit the OOD score (stages/lib/results/ood.py) there and record the share of films it
    flags. The post-hoc fit on val (temperature, prediction sets, operating points) goes to
    `files.calibration`. Each set in `external` (its cache `files.external`/<name>) is scored as test:
    predictions in `files.predictions`/external/<name>.csv, numbers in the block `external`. With `hide`
    (params' `hide_lungs`), the shown split is scored again with that box hidden: predictions in
    `files.predictions`/lungs_hidden/<split>.csv, numbers in the block `lungs_hidden`."""
    cache_meta = verify_cache(files.cache)  # a damaged cache is refused before the model is loaded
    classes = cache_meta["classes"]
    caches = ext.open_caches(files.external, external, cache_meta)  # refused before any inference
    model, meta = load_model(files.model, backbone, cache_meta["preprocess"], classes)
    run = Scorer.ready(model, t or Train(precision="fp32", num_workers=0), e.batch_size, e.tta_hflip)
    print(f"{backbone}: {run.runtime.line()}", flush=True)
    outputs = {split: run.split(files.cache, split) for split in SCORED_SPLITS}
    report = write_and_score(outputs, classes, Path(files.predictions), e)
    fitted, blocks = posthoc.fit_and_score({split: o[1:] for split, o in outputs.items()}, classes, e)
    report.update(blocks)
    on_external = {name: run.split(cache, split) for name, (cache, split) in caches.items()}
    write_predictions({ext.predictions_split(n): o for n, o in on_external.items()}, classes, files.predictions)
    report["external"] = ext.score_sets(caches, on_external, classes, fitted, outputs["test"][1:], e)
    # subgroups and Grad-CAM on test, or on val when test labels are hidden (Grad-CAM picks examples by label)
    shown = shown_split_of(report)
    report["subgroups"] = subgroups.subgroups_block(
        files.cache, shown, outputs[shown][1:], report[shown]["macro_f1"], classes, e
    )
    if hide is not None:
        report[lungs_hidden.KEY] = score_lungs_hidden(run, files, shown, outputs[shown], classes, e, hide)
    save_figure(
        gradcam_figure(model, backbone, files.cache, shown, e.gradcam_per_class, outputs[shown][2]),
        files.gradcam,
        synthetic=bool(cache_meta.get("synthetic")),
    )
    report.update(run_facts(meta, e))
    if files.ood is not None:
        add_ood(report, fit_ood(run, backbone, files, caches, len(classes)), caches)
    write_json(files.metrics, report)
    write_json(files.calibration or posthoc.sidecar_path(files.model), fitted)
    return report


# params: the model ready to score, its files, the split and its normal outputs, then how to score and hide.
def score_lungs_hidden(
    run: Scorer, files: RunFiles, split: str, normal: tuple, classes, e: Evaluate, hide: HideLungs
) -> dict:
    """`split` scored again with the lungs hidden: its predictions written, its `lungs_hidden` block returned."""
    hidden = run.split(files.cache, split, transform=LungsHidden(hide))
    write_predictions({lungs_hidden.predictions_split(split): hidden}, classes, files.predictions)
    return lungs_hidden.block(split, normal[1], normal[2], hidden[2], classes, e, hide)


def run_facts(meta: dict, e: Evaluate) -> dict:
    """The run's seed and epochs from its checkpoint's metadata, and the provenance of its metrics:
    the training's params and data with params' evaluate, this code, and the code it was trained at."""
    trained = meta.get("provenance") or {"params": {}, "data": None, "git": None}  # checkpoints before the stamp
    return {
        "seed": meta.get("seed"),
        "best_epoch": meta["epoch"],
        "epochs_run": meta["epochs_run"],
        "tta_hflip": e.tta_hflip,
        "provenance": {
            **provenance.stamp({**trained["params"], "evaluate": e.model_dump()}, trained["data"]),
            "trained_at": trained["git"],
        },
    }


def fit_ood(run: Scorer, backbone: str, files: RunFiles, caches: dict, n_classes: int) -> dict:
    """The OOD score fitted on the internal cache, with its share flagged on val, test and each
    external set; written to `files.ood`."""
    others = {ext.predictions_split(name): (str(c), split) for name, (c, split) in caches.items()}
    stats = ood.fit_and_flag(*measure(run.model, backbone, files.cache, others, run.batch_size, run.device), n_classes)
    write_json(files.ood, stats)
    return stats


def add_ood(report: dict, stats: dict, caches: dict) -> None:
    """The blocks `ood` (the share flagged on each split) and external.<name>.ood in `report`."""
    shares = stats["flagged"]
    report["ood"] = {"flagged": shares, "keep": ood.KEEP}
    for name in caches:
        report["external"][name]["ood"] = {"flagged": shares[ext.predictions_split(name)], "keep": ood.KEEP}


def gradcam_figure(model, backbone: str, cache_dir: str, split: str, per_class: int, probs):
    """Grad-CAM of the predicted class for correct and misclassified images of each class in `split`
    (`per_class` a class); no heatmap when the target layer's map is too coarse (gradcam.too_coarse)."""
    examples, note = gradcam.examples(model, backbone, CachedSplit(cache_dir, split), probs, per_class)
    kind = "Grad-CAM of the predicted class" if note is None else "Grad-CAM examples"
    return gradcam_grid(examples, f"{backbone}: {kind}, correct and misclassified {split} images", note)


def _parser() -> argparse.ArgumentParser:
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
    return parser


@cli
def main() -> None:
    args = _parser().parse_args()
    cfg = load_params()
    files = RunFiles(
        args.cache,
        args.model,
        args.metrics,
        args.predictions,
        args.gradcam,
        args.ood,
        args.calibration,
        args.external,
    )
    r = evaluate(args.backbone, files, cfg.evaluate, cfg.train, list(cfg.external), cfg.hide_lungs)
    cards.write_card_from(
        args, f"{args.backbone}, seed {r['seed']}", bool(read_json(Path(args.cache) / "meta.json").get("synthetic"))
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
