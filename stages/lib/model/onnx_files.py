"""ONNX files of trained models: export one model or an ensemble, check the file against PyTorch, and
open one for onnxruntime.

The graph takes what `predict` feeds a network, the preprocessed uint8 film [B, 1, S, S] (CLAHE,
resize and crop happen before, as the metadata's `cxr4.preprocess` says), normalises it as
`transforms.to_model_input` does, and returns class probabilities; a single model also returns its
penultimate features, from which the OOD score (stages/lib/results/ood.py) is computed. An ensemble is one
graph whose output is the mean of its members' probabilities, as the ensemble stage averages them.
Everything `cxr4-predict` needs travels in the file's metadata_props (keys `cxr4.*`).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.lib.core.errors import UserError
from stages.lib.core.files import atomic_path
from stages.lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from stages.lib.model.networks import head
from stages.lib.params.schema import Preprocess

OPSET = 18  # the opset we export and accept (onnxruntime 1.32 runs it; torch.onnx's default too)
FORMAT = "1"  # metadata layout version, `cxr4.format`
TOLERANCE = 1e-4  # largest difference allowed between onnxruntime's and PyTorch's probabilities
EXTRA = "the export extra (make installs it; pip: pip install -e '.[export]')"


def require_onnx():
    """onnx and onnxruntime, or a one-line refusal naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise UserError(f"ONNX needs onnx and onnxruntime ({err.name} is missing); install {EXTRA}") from err
    return onnx, onnxruntime


class Exportable(nn.Module):
    """uint8 films [B, 1, S, S] -> probabilities [B, C] (and, for one member, features [B, F])."""

    def __init__(self, members: list[tuple[nn.Module, str]]):
        super().__init__()
        self.bodies, self.linears = nn.ModuleList(), nn.ModuleList()
        for model, backbone in members:
            model = copy.deepcopy(model)  # the caller's network stays whole (it is the check's reference)
            layers = head(model, backbone)
            self.linears.append(layers[-1])
            layers[-1] = nn.Identity()  # the body now ends in the penultimate features
            self.bodies.append(model.eval())
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("shift", -mean / std)
        self.register_buffer("scale", 1 / (255 * std))

    def forward(self, image):
        x = torch.addcmul(self.shift, image.float(), self.scale)  # transforms.to_model_input's arithmetic
        probs, features = [], None
        for body, linear in zip(self.bodies, self.linears):
            features = body(x)
            probs.append(torch.softmax(linear(features), 1))
        if len(probs) == 1:
            return probs[0], features
        return torch.stack(probs).mean(0)


# params: the members and the output, the films the check runs on and where they came from, and the OOD score,
# reference outputs and val fit that travel in the file.
def export(
    members: list[tuple[nn.Module, dict]],
    out: str | os.PathLike,
    films: np.ndarray,
    films_from: str,
    ood: dict | None,
    reference,
    fitted: dict | None = None,
) -> dict:
    """Write `members` (models with their checkpoint metadata) as one ONNX graph to `out`, checked on
    `films` (uint8 [N, 1, S, S]) against `reference(films) -> probabilities` (the PyTorch path); the
    file is replaced only when the check passes. Returns the check's figures."""
    onnx, _ = require_onnx()
    meta = members[0][1]
    module = Exportable([(model, m["backbone"]) for model, m in members]).eval()
    example = torch.from_numpy(films[:2])
    props = {
        "cxr4.format": FORMAT,
        "cxr4.classes": json.dumps(list(meta["classes"])),
        "cxr4.preprocess": json.dumps(meta["preprocess"].model_dump()),
        "cxr4.members": json.dumps([{k: m.get(k) for k in ("backbone", "seed", "epoch")} for _, m in members]),
        "cxr4.provenance": json.dumps([m.get("provenance") for _, m in members], default=str),
    }
    if ood is not None and len(members) == 1:
        props["cxr4.ood"] = json.dumps(ood)
    if fitted is not None and len(members) == 1:  # evaluate's val fit (temperature, sets, operating points)
        props["cxr4.calibration"] = json.dumps(fitted)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["image"],
                output_names=["probabilities", "features"] if len(members) == 1 else ["probabilities"],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                verbose=False,
            )
        model = program.model_proto
        for key, value in props.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))
        check = verify(OnnxModel(tmp), films, reference)
        if check["max_abs_diff"] > TOLERANCE or check["argmax_differs"]:
            raise UserError(
                f"export to {out} failed its check on {films_from}: onnxruntime's probabilities differ "
                f"from PyTorch's by up to {check['max_abs_diff']:.2e} (limit {TOLERANCE:.0e}) and the "
                f"predicted class differs on {check['argmax_differs']} of {check['films']} films; "
                "nothing written"
            )
    return check


def verify(session: OnnxModel, films: np.ndarray, reference, batch_size: int = 32) -> dict:
    """onnxruntime's probabilities against PyTorch's on the same films: the largest absolute difference
    and on how many films the predicted class differs."""
    ours = np.concatenate([session.run(films[i : i + batch_size])[0] for i in range(0, len(films), batch_size)])
    theirs = reference(films)
    return {
        "films": len(films),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "argmax_differs": int((ours.argmax(1) != theirs.argmax(1)).sum()),
    }


@dataclass
class OnnxModel:
    """An ONNX file written by `cxr4-export`, opened for onnxruntime, refused in one line otherwise."""

    path: Path

    def __post_init__(self):
        onnx, ort = require_onnx()
        self.path = Path(self.path)
        redo = f"export the model again with cxr4-export (opset {OPSET})"
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as err:
            raise UserError(f"{self.path} is not an ONNX file ({err.__class__.__name__}); {redo}") from err
        props = {p.key: p.value for p in proto.metadata_props}
        if props.get("cxr4.format") != FORMAT:
            raise UserError(
                f"{self.path} was not written by cxr4-export (no cxr4 metadata: classes, preprocessing); {redo}"
            )
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset != OPSET:
            raise UserError(f"{self.path} uses ONNX opset {opset}, this version runs opset {OPSET}; {redo}")
        self.classes = json.loads(props["cxr4.classes"])
        self.preprocess = Preprocess.model_validate(json.loads(props["cxr4.preprocess"]))
        self.members = json.loads(props["cxr4.members"])
        self.ood = json.loads(props["cxr4.ood"]) if "cxr4.ood" in props else None
        self.fitted = json.loads(props["cxr4.calibration"]) if "cxr4.calibration" in props else None
        self.session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(self, films: np.ndarray) -> list[np.ndarray]:
        """uint8 [B, 1, S, S] -> [probabilities] or [probabilities, features] (float32)."""
        return self.session.run(None, {"image": np.ascontiguousarray(films, dtype=np.uint8)})
