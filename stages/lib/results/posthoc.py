"""Post-hoc calibration: what is fitted on val after training, how it is applied, and the metrics blocks
that judge it on a scored split (docs/calibration.md):

- temperature scaling (Guo et al. 2017) on stored probabilities, judged by NLL, Brier score and ECE, each
  with a bootstrap CI, before and after;
- split-conformal prediction sets (LAC, Sadinle et al. 2019), judged by their coverage and size;
- operating points: per class, the threshold that reaches a target sensitivity on val, judged by that
  threshold's sensitivity and specificity on test or an external set.

One run's fit is saved beside its model (`models/<backbone>/seed<seed>.calibration.json`, written by
evaluate), where cxr4-predict finds it; a seed ensemble's and the all-model ensemble's fits are in
their metrics files (`fitted`). Everything downstream of the temperature (sets, flags) uses the
temperature-scaled probabilities.

Temperature scaling is hand-written rather than with netcal (evaluated): it is one scalar fitted by a
bounded 1-D search (scipy, already locked), a dozen lines; netcal would be a new dependency in the lock
for that, and we need two things around the fit anyway: stored probabilities as input (log p as logits)
and the guarantee that the fit never raises the val NLL (fall back to T = 1). The networks' outputs are
stored as probabilities, so the temperature divides log p: for one network softmax(log p / T) =
softmax(logits / T) exactly; for an ensemble (the mean of several networks' probabilities) it scales the
log of the averaged probabilities, which is a temperature on the ensemble as one model.

Prediction sets: the score of an image is 1 - p(true class). On n val images the threshold q is the
ceil((n + 1)(1 - alpha))-th smallest score; a film's set holds every class with 1 - p(class) <= q,
i.e. p(class) >= 1 - q. If val and test are exchangeable, P(true class in set) >= 1 - alpha.
Hand-written rather than MAPIE or crepes (evaluated): MAPIE's classifiers want a fitted scikit-learn
estimator to call, where we hold precomputed probabilities (a wrapper estimator only to hand them back
is the contortion); crepes takes scores directly but forms sets from (by default smoothed, randomised)
p-values and keeps the whole calibration-score array, where cxr4-predict needs one stored threshold.
The method itself is a few lines, checked against a worked example in tests/test_posthoc.py.

Operating points: a film is flagged for class c when p(c) >= the threshold (one-vs-rest, independent of
the argmax).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json
from stages.lib.core.names import UNLABELED
from stages.lib.params.schema import Evaluate
from stages.lib.results.metrics import bootstrap_ci

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


# --- temperature scaling ---------------------------------------------------------------------------

EPS = 1e-12  # floor for log p: a stored probability of exactly 0 stays finite
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # far beyond any temperature a trained network needs
AT_LIMIT = 1e-3  # a fit within this of a bound (in log T: 0.1% of T) ended there
UNCHANGED = "T = 1, probabilities unchanged"


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row: T > 1 softens, T < 1 sharpens, T = 1 returns p."""
    if temperature == 1.0:
        return probs
    return np.exp(log_softmax(np.log(np.clip(probs, EPS, 1.0)) / temperature, axis=-1))


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0)).mean())


def _val_nll(labels: np.ndarray, probs: np.ndarray):
    """The val NLL as a function of log T (the stored probabilities renormalised by the softmax)."""
    logp = np.log(np.clip(probs, EPS, 1.0))
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, labels].mean())

    return loss


def temperature_not_fitted(labels: np.ndarray, probs: np.ndarray, why: str) -> dict:
    """T = 1 with the reason: what is stored when val cannot fit a temperature."""
    before = _val_nll(labels, probs)(0.0)
    return {"value": 1.0, "val_nll_before": before, "val_nll_after": before, "note": f"not applied: {why}; {UNCHANGED}"}


def _at_limit(found, loss) -> bool:
    """The search ended at (or as low as) a bound: nothing in the data stopped it there, e.g. every
    film right (the NLL falls to 0 as T shrinks) or every film wrong (it falls towards uniform)."""
    return any(abs(found.x - b) < AT_LIMIT or loss(b) <= found.fun + 1e-12 for b in LOG_T_BOUNDS)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> dict:
    """The temperature that minimises the NLL of `labels` under `probs` (val), by a bounded search
    over log T; T = 1 when the search does not lower the NLL (so the fit never raises it) or ends at
    a bound of the search (the films did not stop it: a model all right or all wrong on them, not a
    calibration)."""
    loss = _val_nll(labels, probs)
    before = loss(0.0)
    found = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    improved = bool(found.success and found.fun < before)
    if improved and _at_limit(found, loss):
        return temperature_not_fitted(
            labels,
            probs,
            f"the fit ran to the search limit (T = {np.exp(found.x):.3g}, bounds "
            f"{np.exp(LOG_T_BOUNDS[0]):.3g} to {np.exp(LOG_T_BOUNDS[1]):.3g}): the {len(labels)} val films do not "
            "determine a temperature",
        )
    t = float(np.exp(found.x)) if improved else 1.0
    return {
        "value": t,
        "val_nll_before": before,
        "val_nll_after": float(found.fun) if improved else before,
        "note": None if improved else f"no temperature lowers the val NLL: {UNCHANGED}",
    }


# Batched over bootstrap resamples (y [B, n], p [B, n, C]), for metrics.bootstrap_ci.


def _nll_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    true = np.take_along_axis(p, y[..., None], -1)[..., 0]
    return -np.log(np.clip(true, EPS, 1.0)).mean(-1)


def _brier_batch(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    onehot = np.eye(p.shape[-1])[y]
    return ((p - onehot) ** 2).sum(-1).mean(-1)


def _ece_batch(y: np.ndarray, p: np.ndarray, bins: int) -> np.ndarray:
    """metrics.expected_calibration_error on each resample (same equal-width bins)."""
    b, n = y.shape
    confidence, correct = p.max(-1), (p.argmax(-1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1) + np.arange(b)[:, None] * bins
    conf_sum = np.bincount(index.ravel(), confidence.ravel(), b * bins).reshape(b, bins)
    acc_sum = np.bincount(index.ravel(), correct.ravel(), b * bins).reshape(b, bins)
    return np.abs(acc_sum - conf_sum).sum(1) / n


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of the squared distance to the one-hot truth (0 to 2)."""
    return float(_brier_batch(labels[None], probs[None])[0])


def ece(labels: np.ndarray, probs: np.ndarray, bins: int) -> float:
    return float(_ece_batch(labels[None], probs[None], bins)[0])


def calibration_scores(
    labels: np.ndarray, before: np.ndarray, after: np.ndarray, resamples: int, seed: int, bins: int
) -> dict:
    """NLL, Brier score and ECE of the same images before and after temperature scaling, each with a
    95% bootstrap CI (the same image resamples for before and after: one seed)."""
    statistics = {  # each with its range: NLL is unbounded above, the Brier score at most 2
        "nll": (_nll_batch, (0.0, np.inf)),
        "brier": (_brier_batch, (0.0, 2.0)),
        "ece": (lambda y, p: _ece_batch(y, p, bins), (0.0, 1.0)),
    }
    out = {"n": int(len(labels))}
    for name, (statistic, bounds) in statistics.items():
        block = {}
        for when, probs in (("before", before), ("after", after)):
            block[when] = float(statistic(labels[None], probs[None])[0])
            block[f"{when}_ci95"] = bootstrap_ci(labels, probs, statistic, resamples, seed, bounds)
        out[name] = block
    return out


# --- prediction sets (split-conformal) ----------------------------------------------------------

CONFORMAL_SCORE = "LAC: 1 - p(class), on temperature-scaled probabilities"


def fit_conformal_threshold(labels: np.ndarray, probs: np.ndarray, alpha: float) -> dict:
    """The LAC threshold q on val. When val is too small for alpha (ceil((n+1)(1-alpha)) > n), q = 1:
    every class in every set, which is the only set with the guarantee."""
    scores = 1.0 - probs[np.arange(len(labels)), labels]
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return {"threshold": 1.0, "note": f"val has {n} images, too few for alpha {alpha}: every set holds every class"}
    return {"threshold": float(np.sort(scores)[rank - 1]), "note": None}


def sets_not_fitted(why: str) -> dict:
    """q = 1 with the reason: every class in every set (no information, and no false promise)."""
    return {"threshold": 1.0, "note": f"not applied: {why}; every set holds every class"}


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[N, C] booleans: class c is in image i's set when 1 - p[i, c] <= threshold."""
    return 1.0 - probs <= threshold + 1e-12  # the tolerance keeps the val image that set q in its own set


def set_names(sets: np.ndarray, classes) -> list[str]:
    """'bacteria|virus' per image, classes in output order; '' for an empty set."""
    return ["|".join(c for c, keep in zip(classes, row) if keep) for row in sets]


def _coverage_batch(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.take_along_axis(s, y[..., None], -1)[..., 0].mean(-1)


def _size_batch(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return s.sum(-1).mean(-1)


def coverage_scores(labels: np.ndarray, sets: np.ndarray, classes, resamples: int, seed: int) -> dict:
    """Marginal coverage and mean set size with 95% bootstrap CIs (resampling images), the count of
    empty sets, and coverage per true class (its CI resampling that class's images); a class with no
    image here is reported as absent, not as 0."""
    out = {
        "n": int(len(labels)),
        "coverage": float(_coverage_batch(labels[None], sets[None])[0]),
        "coverage_ci95": bootstrap_ci(labels, sets, _coverage_batch, resamples, seed),
        "mean_set_size": float(_size_batch(labels[None], sets[None])[0]),
        "mean_set_size_ci95": bootstrap_ci(labels, sets, _size_batch, resamples, seed, (0.0, sets.shape[1])),
        "empty_sets": int((~sets.any(1)).sum()),
        "per_class": {},
    }
    for c, name in enumerate(classes):
        mine = labels == c
        if not mine.any():
            out["per_class"][name] = {"n": 0, "absent": True}
            continue
        out["per_class"][name] = {
            "n": int(mine.sum()),
            "coverage": float(sets[mine, c].mean()),
            "coverage_ci95": bootstrap_ci(labels[mine], sets[mine], _coverage_batch, resamples, seed),
        }
    return out


# --- operating points ------------------------------------------------------------------------------


def fit_operating_threshold(labels: np.ndarray, probs: np.ndarray, c: int, target: float) -> dict:
    """The highest threshold whose val sensitivity for class `c` is at least `target`: the
    ceil(target * n_positive)-th highest positive score. None (with a note) without val positives."""
    positives = np.sort(probs[labels == c, c])[::-1]
    if not len(positives):
        return {"threshold": None, "note": "no image of this class in val: no threshold"}
    return {"threshold": float(positives[math.ceil(target * len(positives)) - 1]), "note": None}


def _sensitivity_batch(y: np.ndarray, flagged: np.ndarray, c: int) -> np.ndarray:
    positive = y == c
    with np.errstate(divide="ignore", invalid="ignore"):
        return (flagged & positive).sum(-1) / positive.sum(-1)


def _specificity_batch(y: np.ndarray, flagged: np.ndarray, c: int) -> np.ndarray:
    negative = y != c
    with np.errstate(divide="ignore", invalid="ignore"):
        return (~flagged & negative).sum(-1) / negative.sum(-1)


def operating_scores(
    labels: np.ndarray, probs: np.ndarray, c: int, threshold: float, resamples: int, seed: int
) -> dict:
    """Sensitivity and specificity of flagging class `c` at `threshold`, with 95% bootstrap CIs over
    images; a side with no image (no positives, or no negatives) is None, with the count 0."""
    flagged = probs[:, c] >= threshold
    out = {"n_positive": int((labels == c).sum()), "n_negative": int((labels != c).sum())}
    for name, statistic, count in (
        ("sensitivity", _sensitivity_batch, "n_positive"),
        ("specificity", _specificity_batch, "n_negative"),
    ):
        if not out[count]:
            out[name], out[f"{name}_ci95"] = None, [None, None]
            continue
        batch = lambda y, f, s=statistic: s(y, f, c)  # noqa: E731  (bootstrap_ci's (labels, values) form)
        out[name] = float(batch(labels[None], flagged[None])[0])
        out[f"{name}_ci95"] = bootstrap_ci(labels, flagged, batch, resamples, seed)
    return out


# --- the fit: on val, saved beside the model, applied to new films, judged on a scored split ------------


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
    temperature = temperature_not_fitted(labels, probs, why) if why else fit_temperature(labels, probs)
    scaled = apply_temperature(probs, temperature["value"])
    sets = sets_not_fitted(why) if why else fit_conformal_threshold(labels, scaled, e.alpha)
    points = {
        name: {
            "target_sensitivity": target,
            **fit_operating_threshold(labels, scaled, classes.index(name), target),
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
        "conformal_score": CONFORMAL_SCORE,
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
    scaled = apply_temperature(probs, fitted["temperature"]["value"])
    sets = prediction_sets(scaled, fitted["conformal_threshold"])
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
            points[name] = operating_scores(
                labels, scaled, classes.index(name), point["threshold"], e.bootstrap_resamples, e.seed
            )
    return {
        "temperature": calibration_scores(labels, probs, scaled, e.bootstrap_resamples, e.seed, e.calibration_bins),
        "coverage": coverage_scores(labels, sets, classes, e.bootstrap_resamples, e.seed),
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
