"""Temperature scaling (Guo et al. 2017) on stored probabilities, and the scores that judge calibration:
NLL, Brier score and ECE, each with a bootstrap CI, before and after.

Hand-written rather than with netcal (evaluated): temperature scaling is one scalar fitted by a bounded
1-D search (scipy, already locked), a dozen lines; netcal would be a new dependency in the lock for
that, and we need two things around the fit anyway: stored probabilities as input (log p as logits)
and the guarantee that the fit never raises the val NLL (fall back to T = 1). Tested in
tests/test_posthoc.py.

The networks' outputs are stored as probabilities, so the temperature divides log p: for one network
softmax(log p / T) = softmax(logits / T) exactly; for an ensemble (the mean of several networks'
probabilities) it scales the log of the averaged probabilities, which is a temperature on the
ensemble as one model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from stages.lib.results.metrics import bootstrap_ci

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


def not_fitted(labels: np.ndarray, probs: np.ndarray, why: str) -> dict:
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
        return not_fitted(
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
