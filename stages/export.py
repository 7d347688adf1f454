"""Export a trained model, or several as one ensemble, to ONNX (not a DVC stage; installed as `cxr4-export`).

    cxr4-export --model models/resnet18/seed42.pt --out resnet18.onnx
    cxr4-export --model models/resnet18/seed42.pt models/densenet121/seed42.pt --out ensemble.onnx

The file carries the classes, the preprocessing, the members and their provenance, and (one model)
the OOD score evaluate fitted, in its metadata; `cxr4-predict --model F.onnx` runs it with
onnxruntime. The export is checked before the file is written: onnxruntime's probabilities on the
test films (the preprocess cache's, --cache; or --images) must equal PyTorch's within 1e-4 with the
same predicted class, or nothing is written and the message says by how much they differ.
Needs the `export` extra (in the lock: `make` installs it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from stages.lib.core.errors import Interrupted, UserError, cli
from stages.lib.data.dataset import CachedSplit, verify_cache
from stages.lib.data.formats import MAX_PIXELS
from stages.lib.data.image_files import image_batches, list_images
from stages.lib.model.inference import check_fit, load_model, predict
from stages.lib.model.onnx_files import export, require_onnx
from stages.lib.params.schema import Preprocess
from stages.lib.results import ood, posthoc


def export_models(model_paths: list[str], out: str, cache_dir: str, images: str | None) -> dict:
    """Load the checkpoints (one preprocessing and class list for all), gather the films that check the
    export, and export; returns the check's figures and where its films came from."""
    require_onnx()  # the export extra, checked before any model loads
    members = [load_model(p) for p in model_paths]
    first, meta0 = model_paths[0], members[0][1]
    for path, (_, meta) in zip(model_paths[1:], members[1:]):
        if meta["classes"] != meta0["classes"] or meta["preprocess"] != meta0["preprocess"]:
            raise UserError(
                f"{path} was trained on other classes or preprocessing than {first}; an ensemble "
                "needs models of one pipeline run"
            )
    if images is not None:
        films, where = _decoded(images, meta0["preprocess"]), f"images of {images}"
    else:
        if not (Path(cache_dir) / "meta.json").is_file():
            raise UserError(
                f"no test films to check the export on: {cache_dir}/ is not a preprocess cache; run "
                "from the project root (dvc repro writes cache/), pass --cache DIR or --images DIR"
            )
        cache_meta = verify_cache(cache_dir)
        for path, (_, meta) in zip(model_paths, members):  # refuses a model that does not fit the cache
            check_fit(path, meta, preprocess=cache_meta["preprocess"], classes=cache_meta["classes"])
        films, where = np.array(CachedSplit(cache_dir, "test").images)[:, None], f"test films of {cache_dir}"

    def reference(x: np.ndarray) -> np.ndarray:
        """The PyTorch path predict and evaluate take, averaged over the members as the ensemble stage does."""
        batches = [
            (torch.from_numpy(x[i : i + 32]), torch.zeros(len(x[i : i + 32]), dtype=torch.long))
            for i in range(0, len(x), 32)
        ]
        return np.mean([predict(model, batches, torch.device("cpu"))[0] for model, _ in members], axis=0)

    fitted = ood.ood_path(first)
    stats = ood.load(fitted) if len(members) == 1 and fitted.is_file() else None
    calibration = posthoc.load(first, meta0["classes"]) if len(members) == 1 else None
    check = export(members, out, films, where, stats, reference, calibration)
    return {**check, "from": where}


def _decoded(images: str, preprocess: Preprocess) -> np.ndarray:
    """Every image `images` names, preprocessed as predict does; a bad file is refused by name."""
    films = []
    for _, x, bad in image_batches(list_images(images), preprocess, MAX_PIXELS, 32):
        if bad:
            raise UserError(bad[0][1])
        films.append(x.numpy())
    return np.concatenate(films)


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="checkpoint(s) written by the train stage; several: one graph averaging their probabilities",
    )
    parser.add_argument("--out", required=True, help="ONNX file to write (replaced only when the check passes)")
    parser.add_argument(
        "--cache",
        default="cache",
        help="preprocess cache whose test films check the export (default: cache, as in dvc.yaml)",
    )
    parser.add_argument(
        "--images", help="check on these images instead (a folder or a CSV list, as cxr4-predict reads)"
    )
    args = parser.parse_args()
    try:
        check = export_models(args.model, args.out, args.cache, args.images)
    except KeyboardInterrupt:
        raise Interrupted(f"{args.out} unchanged, nothing written") from None
    print(
        f"{args.out}: {len(args.model)} model(s) exported; checked on {check['films']} {check['from']}: largest "
        f"probability difference from PyTorch {check['max_abs_diff']:.1e} (limit 1e-4), same predicted class on all"
    )


if __name__ == "__main__":
    main()
