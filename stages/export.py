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

from stages.lib.core.errors import Interrupted, cli
from stages.lib.model.onnx_files import export_models


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
