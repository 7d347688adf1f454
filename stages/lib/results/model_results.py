"""Every model's results as the report shows them, recomputed from the per-image predictions: each
backbone's seed ensemble (the mean of its runs), the ensemble of every run (as the ensemble stage) and
the two shortcuts (file metadata only, the film outside the lungs only); each backbone's seeds and
training logs; the models compared pairwise and with both shortcuts; and each model's post-hoc fits,
subgroups, external sets and scores with the lungs hidden.

The numbers come from the functions evaluate, combine and ensemble use (`score_split`, `seed_block`,
external `score`, seeded bootstraps), so they match metrics/<model>.json exactly; reading those JSON
files instead would make the report stage depend on metrics/, where it writes summary.md.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from stages.lib.core import live_logs
from stages.lib.core.files import read_json
from stages.lib.core.names import (
    ENSEMBLE,
    PIXEL_SHORTCUT,
    SCORED_SPLITS,
    SHORTCUT,
    SHORTCUTS,
    UNLABELED,
    run_name,
    seed_run,
)
from stages.lib.params.schema import Config, Evaluate
from stages.lib.results import external_scores as ext
from stages.lib.results import lungs_hidden, ood, posthoc, subgroups
from stages.lib.results.comparisons import paired_difference, seed_block
from stages.lib.results.evaluation import mean_of_runs, read_runs, score_split, shown_split_of


@dataclass
class Results:
    """Everything the figures and the summary show, computed once from the stages' outputs."""

    classes: list[str]
    scores: dict = field(default_factory=dict)  # model -> split -> metrics (backbones, ensemble)
    shortcuts: dict = field(default_factory=dict)  # shortcut -> split -> metrics (None: labels hidden)
    outputs: dict = field(default_factory=dict)  # split -> model -> (labels, probs) of labelled images
    runs: dict = field(default_factory=dict)  # split -> model -> (labels, probs [runs, N, C]) all images
    seeds: dict = field(default_factory=dict)  # backbone -> metrics/<b>.json's `seeds` block
    histories: dict = field(default_factory=dict)  # run label -> DVCLive history
    training: dict = field(default_factory=dict)  # backbone -> best epoch / epochs run (median over seeds)
    comparisons: list = field(default_factory=list)  # paired differences on the shown split


def collect(cfg: Config, classes: list[str], predictions_dir: str, live_dir: str) -> Results:
    """Score every model and run, read the training logs, and compare the models pairwise. A model is
    the mean of its runs: a backbone of its seeds, the ensemble of every run (as the ensemble stage)."""
    r = Results(classes=classes)
    folders = run_folders(cfg, predictions_dir)
    for split in SCORED_SPLITS:
        r.runs[split] = split_runs(folders, split, classes)
        r.outputs[split] = {name: _labelled_mean(*runs) for name, runs in r.runs[split].items()}
    for name in [*cfg.backbones, ENSEMBLE, *SHORTCUTS]:
        scored = {
            split: score_split(*mean_of_runs(r.runs[split][name]), classes, cfg.evaluate, split)
            for split in SCORED_SPLITS
        }
        (r.shortcuts if name in SHORTCUTS else r.scores)[name] = scored
    for b in cfg.backbones:
        _add_seeds(r, b, cfg, live_dir)
    r.comparisons = compare(r, cfg.backbones, cfg.evaluate)
    return r


def run_folders(cfg: Config, predictions_dir: str) -> dict[str, list[Path]]:
    """Each model's prediction folders: a backbone's seeds, every run for the ensemble, each shortcut's own."""
    folders = {b: [seed_run(Path(predictions_dir) / b, s) for s in cfg.seeds] for b in cfg.backbones}
    folders[ENSEMBLE] = [f for b in cfg.backbones for f in folders[b]]
    for name in SHORTCUTS:
        folders[name] = [Path(predictions_dir) / name]
    return folders


def split_runs(folders: dict[str, list[Path]], split: str, classes) -> dict[str, tuple]:
    """Each model's (labels, probs [runs, N, C]) on `split`. The ensemble's members are different networks,
    not exchangeable seeds: the comparisons take it as one fixed model (resampling its members would
    score ensembles of one backbone repeated), so its runs are averaged into one."""
    runs = {name: read_runs(f, split, classes)[1:] for name, f in folders.items()}
    labels, members = runs[ENSEMBLE]
    runs[ENSEMBLE] = (labels, members.mean(0, keepdims=True))
    return runs


def _labelled_mean(labels, runs):
    known = labels != UNLABELED
    return labels[known], runs.mean(0)[known]


def _add_seeds(r: Results, b: str, cfg: Config, live_dir: str) -> None:
    """Backbone `b`'s seeds: each run scored, its DVCLive history, the seed block of metrics/<b>.json, and
    the median best epoch / epochs run."""
    e, per_seed = cfg.evaluate, {}
    for i, s in enumerate(cfg.seeds):
        live = Path(live_dir) / run_name(b, s)
        summary = read_json(live / "metrics.json") if (live / "metrics.json").is_file() else {}
        per_seed[s] = {
            split: score_split(r.runs[split][b][0], r.runs[split][b][1][i], r.classes, e, split)
            for split in SCORED_SPLITS
        } | {"best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run")}
        r.histories[b if len(cfg.seeds) == 1 else run_name(b, s)] = live_logs.history(live)
    r.seeds[b] = seed_block(per_seed, *r.runs["test"][b], e.bootstrap_resamples, e.seed)
    epochs = [m for m in per_seed.values() if m["best_epoch"] is not None]
    if epochs:
        r.training[b] = {k: statistics.median_low(m[k] for m in epochs) for k in ("best_epoch", "epochs_run")}


def compare(r: Results, backbones, e: Evaluate) -> list[dict]:
    """Every pair of backbones, each backbone against the ensemble, and each model against both shortcuts:
    paired differences on the shown split's labelled images."""
    split = shown_split(r)
    pairs = [
        *combinations(backbones, 2),
        *((b, ENSEMBLE) for b in backbones),
        *((m, shortcut) for shortcut in (SHORTCUT, PIXEL_SHORTCUT) for m in [*backbones, ENSEMBLE]),
    ]
    rows = []
    for a, b in pairs:
        (labels, runs_a), (_, runs_b) = r.runs[split][a], r.runs[split][b]
        diff = paired_difference(labels, runs_a, runs_b, e.bootstrap_resamples, e.seed)
        rows.append({"a": a, "b": b, "split": split, **diff})
    return rows


def shown_split(r: Results) -> str:
    """Figures and comparisons show the test split, or val when test labels are hidden."""
    return "test" if all(shown_split_of(s) == "test" for s in r.scores.values()) else "val"


def posthoc_fits(r: Results, models, e: Evaluate) -> dict[str, tuple[dict, dict]]:
    """Each model's post-hoc fit and its metrics blocks, refitted on val with evaluate's functions (as
    the scores are)."""
    return {
        n: posthoc.fit_and_score({split: r.outputs[split][n] for split in SCORED_SPLITS}, r.classes, e) for n in models
    }


def subgroup_blocks(cfg: Config, cache_dir: Path, r: Results, split: str, models) -> dict:
    """Each model's `subgroups` block on the shown split, as evaluate computes it for one run."""
    return {
        name: subgroups.subgroups_block(
            cache_dir,
            split,
            mean_of_runs(r.runs[split][name]),
            r.scores[name][split]["macro_f1"],
            r.classes,
            cfg.evaluate,
        )
        for name in models
    }


def external_blocks(cfg: Config, r: Results, fits: dict, predictions_dir: str, models_dir: str | None) -> dict:
    """{set: {model: its `external` entry}} for each external set in params: every run (with its val fit
    and OOD share from models/, as evaluate wrote them), each seed ensemble and the ensemble (their
    fits refitted on val, as combine and ensemble fit them), scored from the runs' predictions with
    evaluate's function (stages/lib/results/external_scores.py `score`)."""
    if not cfg.external:
        return {}
    runs = {
        run_name(b, s): (b, i, seed_run(Path(predictions_dir) / b, s))
        for b in cfg.backbones
        for i, s in enumerate(cfg.seeds)
    }
    out: dict[str, dict] = {name: {} for name in cfg.external}
    if models_dir is not None:
        for run, (b, i, folder) in runs.items():
            labels, test = r.runs["test"][b]
            for name, m in _run_external(cfg, r, Path(models_dir) / f"{run}.pt", folder, (labels, test[i])).items():
                out[name][run] = m
    for model in [*cfg.backbones, ENSEMBLE]:
        folders = [f for b, _, f in runs.values() if model in (b, ENSEMBLE)]
        test = mean_of_runs(r.runs["test"][model])
        for name, m in ext.score_runs(folders, cfg.external, r.classes, fits[model][0], test, cfg.evaluate).items():
            out[name][model] = m
    return out


def _run_external(cfg: Config, r: Results, model: Path, folder: Path, test: tuple) -> dict:
    """One run's entry of each external set (`test`: the run's internal test labels and probabilities, the
    drop's reference), with its val fit and the share of the set's films its OOD score flags, both as
    evaluate saved them beside `model`."""
    fitted = posthoc.load(model, r.classes)
    shares = read_json(ood.ood_path(model))["flagged"] if ood.ood_path(model).is_file() else {}
    out = {}
    for name, m in ext.score_runs([folder], cfg.external, r.classes, fitted, test, cfg.evaluate).items():
        share = shares.get(ext.predictions_split(name))
        out[name] = {**m, **({"ood": {"flagged": share}} if share is not None else {})}
    return out


def lungs_hidden_blocks(cfg: Config, r: Results, predictions_dir: str, models) -> dict:
    """Each model's `lungs_hidden` block on the shown split, from its runs' predictions with the lungs hidden,
    as combine and ensemble compute it."""
    split, folders = shown_split(r), run_folders(cfg, predictions_dir)
    return {
        name: lungs_hidden.of_runs(folders[name], split, r.runs[split][name], r.classes, cfg.evaluate, cfg.hide_lungs)
        for name in models
    }
