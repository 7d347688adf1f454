"""A trained model behind one call for `cxr4-predict`: a PyTorch checkpoint (.pt) or an ONNX file written
by `cxr4-export` (.onnx, run with onnxruntime), each giving class probabilities and, where a fitted
OOD score exists, the films' OOD scores."""

from __future__ import annotations

import numpy as np
import torch

from stages.lib.core.errors import UserError
from stages.lib.model.features import capture_features
from stages.lib.model.inference import load_model, predict
from stages.lib.model.runtime import pick_device
from stages.lib.results import ood as ood_lib
from stages.lib.results import posthoc


class Runner:
    classes: list[str]
    preprocess: object
    ood: dict | None  # the fitted OOD score, or None
    fitted: dict | None  # evaluate's val fit (stages/lib/results/posthoc.py), or None
    fit_source: str  # where the fit was read: the calibration file beside a checkpoint, or the ONNX file itself
    device: torch.device

    def __call__(self, x: torch.Tensor, hflip: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 films [B, 1, S, S] -> (probabilities [B, C], OOD scores [B] or None). The OOD score is
        computed on the film as given (not its mirror), as evaluate fits it."""
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, path: str):
        self.model, meta = load_model(path)
        self.backbone, self.classes, self.preprocess = meta["backbone"], meta["classes"], meta["preprocess"]
        self.device = pick_device()
        self.model.to(self.device)
        fitted = ood_lib.ood_path(path)
        self.ood = ood_lib.load(fitted) if fitted.is_file() else None
        self.fitted = posthoc.load(path, self.classes)
        self.fit_source = str(posthoc.sidecar_path(path))
        self.missing_ood = f"no fitted OOD score beside {path} ({fitted}); run evaluate (dvc repro)"

    def __call__(self, x, hflip):
        with capture_features(self.model, self.backbone) as seen:
            probs, _, _ = predict(self.model, [(x, torch.zeros(len(x), dtype=torch.long))], self.device, hflip=hflip)
        scores = (
            ood_lib.score(self.ood, seen[0].float().cpu().numpy(), x.numpy()) if self.ood else None
        )  # seen[1]: the mirror
        return probs, scores


class OnnxRunner(Runner):
    def __init__(self, path: str):
        from stages.lib.model.onnx_files import OnnxModel

        self.model = OnnxModel(path)
        self.classes, self.preprocess, self.ood = self.model.classes, self.model.preprocess, self.model.ood
        self.fitted, self.fit_source = self.model.fitted, str(path)  # the fit travels inside the file
        self.device = torch.device("cpu")
        self.missing_ood = (
            f"{path} carries no fitted OOD score (an ensemble, or exported before evaluate fitted "
            "one); pass --no-ood, or export a single model after evaluate"
        )

    def __call__(self, x, hflip):
        films = x.numpy()
        out = self.model.run(films)
        probs = out[0].astype(np.float64)
        if hflip:
            probs = (probs + self.model.run(films[..., ::-1])[0]) / 2
        scores = ood_lib.score(self.ood, out[1], films) if self.ood else None
        return probs, scores


def open_model(path: str, ood: bool | None) -> Runner:
    """The model at `path`; `ood` True requires a fitted OOD score, False ignores it, None uses one if found."""
    runner = OnnxRunner(path) if str(path).lower().endswith(".onnx") else TorchRunner(path)
    if ood is True and runner.ood is None:
        raise UserError(f"--ood: {runner.missing_ood}")
    if ood is False:
        runner.ood = None
    return runner
