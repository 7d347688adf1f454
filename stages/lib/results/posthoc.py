"""What is fitted on val after training (temperature, conformal threshold, operating-point thresholds),
how it is applied, and the metrics blocks that judge it on a scored split.

One run's fit is saved beside its model (`models/<backbone>/seed<seed>.calibration.json`, written by
evaluate), where cxr4-predict finds it; a seed ensemble's and the all-model ensemble's fits are in
their metrics files (`fitted`). Everything downstream of the temperature (sets, flags) uses the
temperature-scaled probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json
from stages.lib.core.names import UNLABELED
from stages.lib.params.schema import Evaluate
from stages.lib.results import calibration, conformal, operating_points

SIDECAR_SUFFIX = ".calibration.json"
VERSION = 1
# Fewer labelled val films than this fit no temperature and no prediction-set threshold: one or two
# films more or less would move them (data.min_val's default: a smaller given val is re-split).
MIN_FILMS = 20
# Said wherever coverage is shown (the metrics file's coverage block, the summary, the cards): the conformal
# guarantee assumes val is new to the model, and it is not. Kept rather than a val split of its own: the
# split would take films from checkpoint selection, as the reference study uses val (docs/calibration.md).
VAL_USE = (
    "val also chose the checkpoint (the epoch of best val macro-F1) and fitted the temperature, so it is not "
    "new to the model: coverage can fall short of the target by more than chance"
)


def sidecar_path(model_path: str | Path) -> Path:
    """models/<backbone>/seed<seed>.pt -> models/<backbone>/seed<seed>.calibration.json."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def fit(labels: np.ndarray, probs: np.ndarray, classes, e: Evaluate) -> dict:
    """Temperature, conformal threshold at `e.alpha` and the `e.target_sensitivity` thresholds, all
    fitted on these (val) labels and probabilities; unlabelled images are left out."""
    known = labels != UNLABELED
    labels, probs = labels[known], probs[known]
    if not len(labels):
        raise UserError(
            "the val split has no labelled image: nothing to fit temperature, prediction sets or "
            "operating points on; give val labels"
        )
    why = too_few(labels, classes)
    temperature = calibration.not_fitted(labels, probs, why) if why else calibration.fit_temperature(labels, probs)
    scaled = calibration.apply_temperature(probs, temperature["value"])
    sets = conformal.not_fitted(why) if why else conformal.fit_threshold(labels, scaled, e.alpha)
    points = {
        name: {
            "target_sensitivity": target,
            **operating_points.fit_threshold(labels, scaled, classes.index(name), target),
        }
        for name, target in e.target_sensitivity.items()
    }
    return {
        "version": VERSION,
        "classes": list(classes),
        "fitted_on": "val",
        "n_val": int(len(labels)),
        "temperature": temperature,
        "alpha": e.alpha,
        "conformal_score": conformal.SCORE,
        "conformal_threshold": sets["threshold"],
        "conformal_note": sets["note"],
        "operating_points": points,
    }


def too_few(labels: np.ndarray, classes) -> str | None:
    """Why these labelled val films cannot fit a temperature or a prediction-set threshold, or None:
    fewer than MIN_FILMS films, or films of one class only (every film then says the same thing)."""
    present = np.unique(labels)
    if len(labels) < MIN_FILMS:
        return f"val has {len(labels)} labelled films, fewer than the {MIN_FILMS} a fit needs"
    if len(present) < 2:
        return f"every val film is {classes[present[0]]}: one class cannot fit it"
    return None


def apply(fitted: dict, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(temperature-scaled probabilities, prediction sets [N, C], {class: flagged [N]}) for new images."""
    scaled = calibration.apply_temperature(probs, fitted["temperature"]["value"])
    sets = conformal.prediction_sets(scaled, fitted["conformal_threshold"])
    classes = fitted["classes"]
    flags = {
        name: scaled[:, classes.index(name)] >= point["threshold"]
        for name, point in fitted["operating_points"].items()
        if point["threshold"] is not None
    }
    return scaled, sets, flags


def describe(fitted: dict, source: str) -> str:
    """What of a fit `cxr4-predict` applies, and why each part it does not apply is left out:
    "temperature, prediction sets and flags from <source>", or with "; temperature: not applied: ..."."""
    t, notes = fitted["temperature"], []
    if t.get("note"):
        notes.append(f"temperature: {t['note']}")
    if fitted.get("conformal_note"):
        notes.append(f"prediction sets: {fitted['conformal_note']}")
    parts = ["temperature"] if not t.get("note") else []
    parts += ["prediction sets"] if not fitted.get("conformal_note") else []
    parts += ["flags"] if any(p["threshold"] is not None for p in fitted["operating_points"].values()) else []
    return f"{', '.join(parts) or 'nothing'} from {source}" + "".join(f"; {note}" for note in notes)


def score(fitted: dict, labels: np.ndarray, probs: np.ndarray, e: Evaluate) -> dict:
    """One labelled split judged with a fit: calibration before/after temperature, coverage and set
    size of the prediction sets, and each operating point's sensitivity and specificity, with CIs."""
    known = labels != UNLABELED
    labels, probs = labels[known], probs[known]
    scaled, sets, _ = apply(fitted, probs)
    classes = fitted["classes"]
    points = {}
    for name, point in fitted["operating_points"].items():
        if point["threshold"] is not None:
            points[name] = operating_points.operating_scores(
                labels, scaled, classes.index(name), point["threshold"], e.bootstrap_resamples, e.seed
            )
    return {
        "temperature": calibration.calibration_scores(
            labels, probs, scaled, e.bootstrap_resamples, e.seed, e.calibration_bins
        ),
        "coverage": conformal.coverage_scores(labels, sets, classes, e.bootstrap_resamples, e.seed),
        "operating_points": points,
    }


def blocks(fitted: dict, outputs: dict[str, tuple[np.ndarray, np.ndarray]], e: Evaluate) -> dict:
    """The metrics file's `temperature`, `coverage` and `operating_points` blocks: the fit, then each
    labelled split in `outputs` ({split: (labels, probabilities)}) under its name. Val's coverage is
    in-sample (the threshold was fitted there), so coverage is reported on the other splits only."""
    t = fitted["temperature"]
    out = {
        "temperature": {
            "value": t["value"],
            "fitted_on": "val",
            "note": t["note"],
            "method": "softmax(log p / T), T minimising val NLL (docs/calibration.md)",
        },
        "coverage": {
            "alpha": fitted["alpha"],
            "target": 1 - fitted["alpha"],
            "score": fitted["conformal_score"],
            "threshold": fitted["conformal_threshold"],
            "note": fitted["conformal_note"],
            "val_use": VAL_USE,
        },
        "operating_points": {name: dict(point) for name, point in fitted["operating_points"].items()},
    }
    for split, (labels, probs) in outputs.items():
        if not (labels != UNLABELED).any():
            continue
        scored = score(fitted, labels, probs, e)
        out["temperature"][split] = scored["temperature"]
        if split != "val":
            out["coverage"][split] = scored["coverage"]
        for name, numbers in scored["operating_points"].items():
            out["operating_points"][name][split] = numbers
    return out


def fit_and_score(outputs: dict[str, tuple[np.ndarray, np.ndarray]], classes, e: Evaluate) -> tuple[dict, dict]:
    """(the fit on outputs["val"], the metrics blocks for every split in `outputs`)."""
    fitted = fit(*outputs["val"], classes, e)
    return fitted, blocks(fitted, outputs, e)


def load(model_path: str | Path, classes) -> dict | None:
    """The fit saved beside a model, or None when there is none (a model evaluated before this
    existed); refused when it speaks of other classes than the model's."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    fitted = read_json(path)
    if fitted.get("version") != VERSION or fitted.get("classes") != list(classes):
        raise UserError(
            f"{path} does not belong to {model_path} (classes {fitted.get('classes')}, version "
            f"{fitted.get('version')}); rerun evaluate (dvc repro) or delete it"
        )
    return fitted
