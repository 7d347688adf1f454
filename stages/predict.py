"""Classify new images with a trained model (not a DVC stage).

    python -m stages.predict --model models/resnet18.pt --images DIR --out predictions.csv [--submission]

The preprocessing is the one stored in the checkpoint, so there is no config to keep in sync.
Files that cannot be read are reported and skipped; the rest are still classified.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from stages.lib.config import Preprocess
from stages.lib.errors import UserError, cli
from stages.lib.formats import MAX_PIXELS, load_gray
from stages.lib.inference import load_model, predict
from stages.lib.io import write_text
from stages.lib.runtime import pick_device
from stages.lib.transforms import preprocess_image, preprocess_transform


def load_images(folder: str | Path, preprocess: Preprocess, max_pixels: int = MAX_PIXELS) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, uint8 [N,S,S] preprocessed images, one 'name: reason' line per skipped file).

    Each file is decoded as preprocess decodes it (formats.load_gray: size checked from the header
    first, against `max_pixels`); subfolders are not read, a broken or looping link is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found; pass an existing folder with --images")
    transform = preprocess_transform(preprocess)
    names, images, skipped = [], [], []
    files = sorted(p for p in folder.iterdir() if p.is_file() or p.is_symlink() and not p.is_dir())
    for path in tqdm(files, desc="read", unit="img", disable=None):
        try:
            if not path.exists():  # a symlink loop or a link to nothing
                raise UserError(f"{path}: a broken or looping symlink; point it at an image or remove it")
            images.append(preprocess_image(load_gray(path, max_pixels, "--max-pixels")[0], transform))
            names.append(path.name)
        except UserError as err:
            skipped.append(str(err))
    size = preprocess.img_size
    return names, np.stack(images) if images else np.zeros((0, size, size), np.uint8), skipped


def predict_images(model, images: np.ndarray, batch_size: int, device, hflip: bool = False) -> np.ndarray:
    x = torch.from_numpy(images)[:, None]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long)),
                                         batch_size=batch_size)
    probs, _, _ = predict(model, loader, device, hflip=hflip)
    return probs


def predictions_table(names, probs: np.ndarray, classes, submission: bool) -> str:
    """Per-image probabilities and predicted class, or the course's one-hot submission format."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if submission:
        writer.writerow(["new_filename", *classes])
        for name, p in zip(names, probs):
            writer.writerow([name, *[int(i == p.argmax()) for i in range(len(classes))]])
    else:
        writer.writerow(["filename", "predicted_label", *[f"prob_{c}" for c in classes]])
        for name, p in zip(names, probs):
            writer.writerow([name, classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return buf.getvalue()


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--images", required=True, help="folder of images (PNG, JPEG, BMP, TIFF, DICOM; 8/16-bit, gray/RGB)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--submission", action="store_true", help="write new_filename + one-hot class columns")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="larger images are skipped, checked before decoding (default: data.max_pixels' default)")
    args = parser.parse_args()
    for name in ("batch_size", "max_pixels"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")

    model, meta = load_model(args.model)
    names, images, skipped = load_images(args.images, meta["preprocess"], args.max_pixels)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not names:
        raise UserError(f"no readable image in {args.images}; nothing to predict")
    device = pick_device()
    probs = predict_images(model.to(device), images, args.batch_size, device, hflip=args.tta)
    write_text(args.out, predictions_table(names, probs, meta["classes"], args.submission))
    print(f"{len(names)} images classified with {meta['backbone']} -> {args.out}"
          + (f"; {len(skipped)} skipped (listed above)" if skipped else ""))


if __name__ == "__main__":
    main()
