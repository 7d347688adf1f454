"""Stage `evaluate@<backbone>-<seed>`: one run's best checkpoint -> its metrics
(metrics/<backbone>/seed<seed>.json), per-image predictions and Grad-CAM examples; each external set
named in params (its cache from external@<name>) scored as test is (block `external`); the test films
scored again with the lungs hidden (block `lungs_hidden`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core.errors import cli
from stages.lib.core.files import read_json
from stages.lib.core.names import SCORED_SPLITS
from stages.lib.params.loader import load_params
from stages.lib.report import cards
from stages.lib.results.run_evaluation import RunFiles, evaluate


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
    if args.card:
        cards.write_card(
            args.card,
            f"{args.backbone}, seed {r['seed']}",
            args.metrics,
            args.data_report,
            args.notice,
            bool(read_json(Path(args.cache) / "meta.json").get("synthetic")),
            args.pixel_shortcut,
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
