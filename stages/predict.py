"""Classify new images with a trained model (not a DVC stage; installed as `cxr4-predict`).

    cxr4-predict --model models/resnet18/seed42.pt --images DIR_OR_LIST.csv --out predictions.csv [--submission]

--images is a folder, read with its subfolders, or a CSV with a `path` column (relative paths are
relative to the CSV's folder). The preprocessing is the one stored in the checkpoint, so there is no
config to keep in sync. The val fit saved beside the model by evaluate (<model>.calibration.json:
temperature, prediction-set threshold, operating points) is found from --model and applied: the
probabilities are temperature-scaled, and each row gets its prediction set (`bacteria|virus`) and a
flag per operating point (docs/calibration.md). Images are decoded and classified a batch at a time; the CSV is written whole
or not at all. A file that is not a readable image stops the run naming it, as preprocess does
(--on-bad-image skip: skip such files and list them instead). An .onnx --model (cxr4-export) runs
with onnxruntime. Where evaluate fitted an OOD score beside the model, each row also gets ood_score
and ood_flag (true: the film is unlike the val films; do not trust its class).
"""

from __future__ import annotations

import argparse

from stages.lib.core.errors import Interrupted, UserError, cli
from stages.lib.core.files import read_json
from stages.lib.data.formats import MAX_PIXELS
from stages.lib.model.prediction import predict_images
from stages.lib.results import posthoc


def workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be auto or an integer >= 0, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint written by the train stage (models/<backbone>/seed<seed>.pt), or an ONNX "
        "file written by cxr4-export (.onnx, run with onnxruntime)",
    )
    parser.add_argument(
        "--images",
        required=True,
        help="folder of images (read with its subfolders; PNG, JPEG, BMP, TIFF, DICOM), or a CSV with a 'path' column",
    )
    parser.add_argument("--out", required=True, help="CSV to write (replaced whole, or left as it was)")
    parser.add_argument("--submission", action="store_true", help="write new_filename + one-hot class columns")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="error (default): stop at the first file that is not a readable image, naming it; "
        "skip: skip such files and list them on stderr",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images decoded and classified at a time")
    parser.add_argument(
        "--workers",
        type=workers_arg,
        default="auto",
        help="processes decoding images; auto = 0 on CPU, min(8, cores) on a GPU",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="larger images are bad files, checked before decoding (default: data.max_pixels' default)",
    )
    flag = parser.add_mutually_exclusive_group()
    flag.add_argument(
        "--ood",
        dest="ood",
        action="store_true",
        default=None,
        help="require the OOD columns (ood_score, ood_flag): refused without a fitted score; by "
        "default they are added when evaluate fitted one (<model>.ood.json, or in the ONNX file)",
    )
    flag.add_argument("--no-ood", dest="ood", action="store_false", help="leave the OOD columns out")
    return parser


@cli
def main() -> None:
    args = _parser().parse_args()
    if args.ood and args.submission:
        raise UserError(
            "--ood and --submission do not go together: the course's submission format has no OOD columns; drop one"
        )
    for name in ("batch_size", "max_pixels"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    try:
        done, skipped = predict_images(
            args.model,
            args.images,
            args.out,
            args.submission,
            args.tta,
            args.batch_size,
            args.max_pixels,
            args.on_bad_image,
            args.workers,
            args.ood,
        )
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} unchanged, nothing written") from None
    sidecar = posthoc.sidecar_path(args.model)
    fit = f" ({posthoc.describe(read_json(sidecar), str(sidecar))})" if sidecar.is_file() else ""
    print(
        f"{done} images classified with {args.model}{fit} -> {args.out}"
        + (f"; {len(skipped)} bad file(s) skipped (listed above)" if skipped else "")
    )


if __name__ == "__main__":
    main()
