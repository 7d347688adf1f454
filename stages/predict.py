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
import os
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stages.lib.core.csv_rows import RowWriter
from stages.lib.core.errors import Interrupted, UserError, cli
from stages.lib.core.files import atomic_path
from stages.lib.core.progress import progress
from stages.lib.data.formats import MAX_PIXELS
from stages.lib.data.image_files import image_batches, list_images
from stages.lib.model.runners import open_model
from stages.lib.model.runtime import resolve_workers
from stages.lib.results import posthoc
from stages.lib.results.ood import flagged
from stages.lib.results.posthoc import set_names


# params: cxr4-predict's options one to one, as keywords with its defaults, so a notebook or a test calls
# it as the command line does.
def predict_images(
    model_path: str,
    images: str,
    out: str,
    submission: bool = False,
    tta: bool = False,
    batch_size: int = 32,
    max_pixels: int = MAX_PIXELS,
    on_bad_image: str = "error",
    workers: int | str = "auto",
    ood: bool | None = None,
) -> tuple[int, list[str], str | None]:
    """Classify every image `images` names into the CSV `out`; (images classified, skipped files' reasons,
    what of the model's val fit was applied and from where, or None without one).

    Under on_bad_image "error" the first bad file is refused (UserError naming it) and `out` is left
    as it was; under "skip" bad files are skipped, each reason printed to stderr and returned.
    `model_path` is a checkpoint (.pt, run with torch) or a file of cxr4-export (.onnx, onnxruntime);
    `ood` None adds OOD columns when a fitted score is found, True requires one, False leaves them out.
    """
    if not Path(model_path).is_file():
        raise UserError(
            f"model {model_path} not found; train one (dvc repro: models/<backbone>/seed<seed>.pt; "
            "make demo: demo/models/...) or pull one (dvc pull, docs/remote.md)"
        )
    model = open_model(model_path, ood)
    # not an earlier run's CSV among the images (realpath, unlike Path.resolve, accepts a looping link)
    files = [f for f in list_images(images) if os.path.realpath(f.path) != os.path.realpath(out)]
    device, classes = model.device, model.classes
    with_ood = model.ood is not None and not submission  # the submission keeps the course's format
    fitted = model.fitted  # the val fit (None for a model evaluated before the fit existed)
    batches = image_batches(
        files,
        model.preprocess,
        max_pixels,
        batch_size,
        resolve_workers(workers, device),
        pin_memory=device.type == "cuda",
    )
    done, skipped = 0, []
    with (
        atomic_path(out) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as f,
        progress(total=len(files), desc="predict", unit="img") as bar,
    ):
        writer = RowWriter(f)
        writer.writerow(header(classes, submission, fitted) + (["ood_score", "ood_flag"] if with_ood else []))
        for indices, x, bad in batches:
            _refuse_or_skip(bad, on_bad_image, skipped)
            if x is not None:
                writer.writerows(_lines(model, [files[i].name for i in indices], x, tta, submission, with_ood))
                done += len(indices)
            bar.update(len(indices) + len(bad))
        if not done:
            raise UserError(f"no readable image in {images} ({len(skipped)} skipped); nothing to predict")
    return done, skipped, posthoc.describe(fitted, model.fit_source) if fitted else None


def _refuse_or_skip(bad: list, on_bad_image: str, skipped: list[str]) -> None:
    """A batch's bad files: refused (the first one, named) under "error", listed on stderr under "skip"."""
    for _, reason in bad:
        if on_bad_image == "error":
            raise UserError(f"{reason} (or pass --on-bad-image skip to skip bad files)")
        skipped.append(reason)
        tqdm.write(f"skipped {reason}", file=sys.stderr)


def _lines(model, names: list[str], x, tta: bool, submission: bool, with_ood: bool) -> list[list]:
    """One batch's CSV rows (with the OOD columns when asked)."""
    probs, scores = model(x, tta)
    lines = rows(names, probs, model.classes, submission, model.fitted)
    if with_ood:
        lines = [
            [*line, f"{score:.6f}", str(bool(flag)).lower()]
            for line, score, flag in zip(lines, scores, flagged(model.ood, scores))
        ]
    return lines


def header(classes, submission: bool, fitted: dict | None = None) -> list[str]:
    if submission:
        return ["new_filename", *classes]
    extra = ["prediction_set", *[f"flag_{c}" for c in _flagged(fitted)]] if fitted else []
    return ["filename", "predicted_label", *[f"prob_{c}" for c in classes], *extra]


def _flagged(fitted: dict) -> list[str]:
    """The classes with a fitted operating point, in output order."""
    return [c for c in fitted["classes"] if (fitted["operating_points"].get(c) or {}).get("threshold") is not None]


def rows(names, probs: np.ndarray, classes, submission: bool, fitted: dict | None = None) -> list[list]:
    """Per image: the predicted class and every probability, or the course's one-hot submission row.
    With a val fit: temperature-scaled probabilities, the prediction set and the operating-point flags
    (1 = at or above the class's threshold)."""
    extra = [[] for _ in names]
    if fitted:
        probs, sets, flags = posthoc.apply(fitted, probs)
        extra = [[s, *[int(flags[c][i]) for c in _flagged(fitted)]] for i, s in enumerate(set_names(sets, classes))]
    best = probs.argmax(1)
    if submission:
        return [[name, *[int(k == b) for k in range(len(classes))]] for name, b in zip(names, best)]
    return [[name, classes[int(b)], *[f"{v:.6f}" for v in p], *x] for name, b, p, x in zip(names, best, probs, extra)]


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
        done, skipped, fit = predict_images(
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
    print(
        f"{done} images classified with {args.model}{f' ({fit})' if fit else ''} -> {args.out}"
        + (f"; {len(skipped)} bad file(s) skipped (listed above)" if skipped else "")
    )


if __name__ == "__main__":
    main()
