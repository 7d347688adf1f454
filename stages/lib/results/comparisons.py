"""How much of a number is the model, and how much the run: seeds and paired comparisons.

- `seed_block`: a backbone's runs side by side: each seed's headline numbers, their mean and sd,
  and a pooled 95% CI for one run (a bootstrap that draws the images and, each time, one seed).
- `paired_difference`: model A minus model B on the same images, with a 95% CI from a paired
  bootstrap: each resample draws the images once for both sides. A side with several seeds is its
  seed ensemble, one fixed model (the mean of all its runs), so only the images are resampled; the
  seed-to-seed spread is the seed block's. (Redrawing the seeds with replacement scored ensembles of
  one or two members, worse than the ensemble compared: a CI centred below its point.) `verdict`
  reads the CI; `beats` is the one rule for "A beats B", the metadata-only shortcut included.

Both reuse the batched statistics of stages.lib.results.metrics (tested there against scikit-learn).
"""

from __future__ import annotations

import statistics

import numpy as np

from stages.lib.core.names import UNLABELED
from stages.lib.results.metrics import METRICS, compared_keys, headline_keys, interval

CHUNK_VALUES = 2**24  # floats per bootstrap chunk (128 MB): memory flat for any test-set size
ONE_SEED = "1 seed: no run-to-run spread measured"


def _labelled(labels: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = labels != UNLABELED
    return labels[known], runs[:, known]


def seed_block(per_seed: dict[int, dict], labels: np.ndarray, runs: np.ndarray, resamples: int, seed: int) -> dict:
    """`per_seed[s]` is run s's detail metrics (metrics/<b>/seed<s>.json), `runs` its test
    probabilities [seeds, N, C] in the same order. Returns metrics/<b>.json's `seeds` block."""
    headline = headline_keys()
    heads = {
        str(s): {
            **{split: {k: m[split][k] for k in keys} for split, keys in headline.items() if m.get(split)},
            "best_epoch": m.get("best_epoch"),
        }
        for s, m in per_seed.items()
    }
    keys = [(split, k) for split, ks in headline.items() for k in ks if all(split in h for h in heads.values())]

    def over_seeds(fn) -> dict:
        out: dict = {}
        for split, k in keys:
            out.setdefault(split, {})[k] = fn([h[split][k] for h in heads.values()])
        return out

    block = {
        "n": len(per_seed),
        "runs": heads,
        "mean": over_seeds(statistics.fmean),
        "sd": over_seeds(statistics.stdev) if len(per_seed) > 1 else None,
    }
    y, p = _labelled(labels, runs)
    if len(y):
        block["pooled_ci95"] = {
            "test": {k: pooled_ci(y, p, METRICS[k].batch, resamples, seed) for k in headline["test"]}
        }
    if len(per_seed) == 1:
        block["note"] = ONE_SEED
    return block


def pooled_ci(y: np.ndarray, runs: np.ndarray, statistic, resamples: int, seed: int) -> list:
    """95% CI of one run's statistic, around the runs' mean: each resample draws the images and one run."""
    rng = np.random.default_rng(seed)
    draws = []
    for b in _chunks(resamples, runs.shape[1] * runs.shape[2]):
        idx = rng.integers(0, len(y), (b, len(y)))
        pick = rng.integers(0, len(runs), b)
        draws.append(statistic(y[idx], runs[pick[:, None], idx]))
    mean = float(np.mean(statistic(np.broadcast_to(y, runs.shape[:2]), runs)))
    return interval(mean, np.concatenate(draws) if draws else np.array([]))


def paired_difference(
    labels: np.ndarray,
    runs_a: np.ndarray,
    runs_b: np.ndarray,
    resamples: int,
    seed: int,
    keys: tuple[str, ...] | None = None,
) -> dict:
    """{metric: {"difference", "ci95", "median", "verdict"}} of A − B on the same labelled images for each of
    `keys` (default: the registry's compared metrics, metrics.compared_keys), each
    side its seed ensemble (the mean of its runs [seeds, N, C]) taken as one fixed model: the CI resamples
    the images only, the same draw for both sides. `median` is the bootstrap's own, before `interval` moves
    it onto the point: a check that the resampling is centred on the point."""
    known = labels != UNLABELED
    y, a, b = labels[known], runs_a[:, known].mean(0), runs_b[:, known].mean(0)
    out = {}
    for key in keys or compared_keys():
        stat = METRICS[key].batch
        point = float(stat(y[None], a[None])[0] - stat(y[None], b[None])[0])
        rng = np.random.default_rng(seed)
        diffs = []
        for n in _chunks(resamples, 2 * a.shape[0] * a.shape[1]):
            idx = rng.integers(0, len(y), (n, len(y)))
            diffs.append(stat(y[idx], a[idx]) - stat(y[idx], b[idx]))
        draws = np.concatenate(diffs) if diffs else np.array([])
        ci = interval(point, draws, (-1.0, 1.0))
        finite = draws[np.isfinite(draws)]
        out[key] = {
            "difference": point if np.isfinite(point) else None,
            "ci95": ci,
            "median": float(np.median(finite)) if len(finite) else None,
            "verdict": verdict(ci, METRICS[key].higher_is_better),
        }
    return out


def beats(d: dict) -> bool:
    """The one rule for "A beats B" (a network the metadata-only shortcut, everywhere the project says
    so): the paired 95% CI of A − B on macro-F1 lies above 0. `d` is paired_difference's macro_f1 entry."""
    return d["verdict"] == "A better"


def stronger(scores: dict[str, float | None]) -> str | None:
    """The stronger of the shortcuts, `scores[name]` its macro-F1 on the split judged: the one every model is
    compared with (the summary's verdict, the cards, quality.json); None when none was scored."""
    scored = {name: v for name, v in scores.items() if v is not None}
    return max(scored, key=scored.get) if scored else None


def verdict(ci: list, higher_is_better: bool = True) -> str:
    """What the 95% CI of A − B says: the side it lies on is the better one (the lower side for a metric
    where lower is better)."""
    low, high = ci
    if low is None:
        return "undefined"
    if low > 0:
        return "A better" if higher_is_better else "B better"
    if high < 0:
        return "B better" if higher_is_better else "A better"
    return "not distinguishable"


def sentence(name_a: str, name_b: str, key: str, d: dict) -> str:
    """'resnet18 − densenet121 = +0.031 [−0.012, +0.075]: not distinguishable' (test macro-F1)."""
    if d["difference"] is None or d["ci95"][0] is None:
        return f"{name_a} − {name_b}: {key} undefined on this split"
    low, high = d["ci95"]
    said = {"A better": f"{name_a} better", "B better": f"{name_b} better"}.get(d["verdict"], d["verdict"])
    return f"{name_a} − {name_b} = {_signed(d['difference'])} [{_signed(low)}, {_signed(high)}]: {said}"


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")  # a typographic minus, as in a paper


def _chunks(resamples: int, values_per_resample: int):
    step = max(1, CHUNK_VALUES // max(1, values_per_resample))
    for start in range(0, resamples, step):
        yield min(step, resamples - start)
