"""Stage `report`: predictions + DVCLive logs -> figures (PNG), per-epoch curves (CSV for `dvc plots`)
and metrics/summary.md: every model's numbers with CIs, each backbone's seeds, and paired
comparisons of the models with each other, the ensemble and the metadata-only shortcut; and the
summary again as one self-contained HTML file (metrics/report.html).

The numbers are recomputed from the per-image predictions with the functions evaluate, combine and
ensemble use (`score_split`, `seed_block`, external `score`, seeded bootstraps), so they match
metrics/<model>.json exactly; reading those JSON files instead would need a dependency on metrics/,
where this stage writes summary.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from stages.lib.core import live_logs, provenance
from stages.lib.core.errors import cli
from stages.lib.core.files import read_json, write_text
from stages.lib.core.names import ENSEMBLE, SCORED_SPLITS, SHORTCUT, STUDY_CLASSES, UNLABELED, seed_run
from stages.lib.model.registry import BACKBONES
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config
from stages.lib.report import cards
from stages.lib.report.class_curves import pr_grid, reliability_grid, roc_grid
from stages.lib.report.html import html_report
from stages.lib.report.plots import confusion_grid, figure_captions, model_colours, save_figure
from stages.lib.report.posthoc_summary import external_markdown, posthoc_markdown, subgroups_markdown
from stages.lib.report.run_plots import comparison, curves_csv, training_curves
from stages.lib.report.summary import sources_lines, summary_markdown
from stages.lib.results import external_scores as ext
from stages.lib.results import ood, posthoc, subgroups
from stages.lib.results.comparisons import COMPARED, paired_difference, seed_block, sentence
from stages.lib.results.evaluation import read_runs, score_split
from stages.lib.results.metrics import class_auroc_ci95, confusion

NAMES = {"macro_f1": "macro-F1", "macro_auroc": "macro AUROC"}


@dataclass
class Results:
    """Everything the figures and the summary show, computed once from the stages' outputs."""

    classes: list[str]
    scores: dict = field(default_factory=dict)  # model -> split -> metrics (backbones, ensemble)
    outputs: dict = field(default_factory=dict)  # split -> model -> (labels, probs) of labelled images
    runs: dict = field(default_factory=dict)  # split -> model -> (labels, probs [runs, N, C]) all images
    seeds: dict = field(default_factory=dict)  # backbone -> metrics/<b>.json's `seeds` block
    histories: dict = field(default_factory=dict)  # run label -> DVCLive history
    training: dict = field(default_factory=dict)  # backbone -> best epoch / epochs run (median over seeds)
    comparisons: list = field(default_factory=list)  # paired differences on the shown split


def collect(cfg: Config, classes: list[str], predictions_dir: str, live_dir: str) -> Results:
    """Score every model and run, read the training logs, and compare the models pairwise. A model is
    the mean of its runs: a backbone of its seeds, the ensemble of every run (as the ensemble stage)."""
    e, backbones, seeds = cfg.evaluate, cfg.backbones, cfg.seeds
    r = Results(classes=classes)
    folders = {b: [seed_run(Path(predictions_dir) / b, s) for s in seeds] for b in backbones}
    folders[ENSEMBLE] = [f for b in backbones for f in folders[b]]
    folders[SHORTCUT] = [Path(predictions_dir) / SHORTCUT]
    for split in SCORED_SPLITS:
        r.runs[split] = {name: read_runs(f, split, classes)[1:] for name, f in folders.items()}
        # The ensemble's members are different networks, not exchangeable seeds: the comparisons take it as
        # one fixed model (resampling its members would score ensembles of one backbone repeated).
        labels, runs = r.runs[split][ENSEMBLE]
        r.runs[split][ENSEMBLE] = (labels, runs.mean(0, keepdims=True))
        r.outputs[split] = {}
        for name, (labels, runs) in r.runs[split].items():
            known = labels != UNLABELED
            r.outputs[split][name] = (labels[known], runs.mean(0)[known])
    for name in [*backbones, ENSEMBLE]:
        r.scores[name] = {split: score_split(*_mean(r.runs[split][name]), classes, e) for split in SCORED_SPLITS}

    for b in backbones:
        per_seed = {}
        for i, s in enumerate(seeds):
            live = Path(live_dir) / b / f"seed{s}"
            summary = read_json(live / "metrics.json") if (live / "metrics.json").is_file() else {}
            per_seed[s] = {
                split: score_split(r.runs[split][b][0], r.runs[split][b][1][i], classes, e) for split in SCORED_SPLITS
            } | {"best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run")}
            r.histories[b if len(seeds) == 1 else f"{b}/seed{s}"] = live_logs.history(live)
        r.seeds[b] = seed_block(per_seed, *r.runs["test"][b], e.bootstrap_resamples, e.seed)
        epochs = [m for m in per_seed.values() if m["best_epoch"] is not None]
        if epochs:
            r.training[b] = {k: statistics.median_low(m[k] for m in epochs) for k in ("best_epoch", "epochs_run")}
    r.comparisons = compare(r, backbones, e)
    return r


def compare(r: Results, backbones, e) -> list[dict]:
    """Every pair of backbones, each backbone against the ensemble and the shortcut, and the ensemble
    against the shortcut: paired differences on the shown split's labelled images."""
    split = shown_split(r)
    pairs = [
        *combinations(backbones, 2),
        *((b, ENSEMBLE) for b in backbones),
        *((m, SHORTCUT) for m in [*backbones, ENSEMBLE]),
    ]
    rows = []
    for a, b in pairs:
        (labels, runs_a), (_, runs_b) = r.runs[split][a], r.runs[split][b]
        diff = paired_difference(labels, runs_a, runs_b, e.bootstrap_resamples, e.seed)
        rows.append({"a": a, "b": b, "split": split, **diff})
    return rows


def shown_split(r: Results) -> str:
    """Figures and comparisons show the test split, or val when test labels are hidden."""
    return "test" if all(s["test"] is not None for s in r.scores.values()) else "val"


def _mean(labels_runs):
    labels, runs = labels_runs
    return labels, runs.mean(0)


def seeds_markdown(seeds: dict, backbone_scores: dict) -> list[str]:
    """Each backbone's runs: seed ensemble vs mean single seed, each seed's test macro-F1, mean ± sd,
    and the pooled CI of one run."""
    lines = [
        "## Seeds",
        "",
        "A backbone's result above is its seed ensemble (the mean of its runs' probabilities). One run of it scores:",
        "",
        "| Backbone | Seeds | Test macro-F1 per seed | Mean ± sd | One run, pooled 95% CI | Seed ensemble |",
        "|---|---:|---|---|---|---|",
    ]
    for b, block in seeds.items():
        f1 = {s: h["test"]["macro_f1"] for s, h in block["runs"].items() if "test" in h}
        if not f1:
            continue
        mean, sd = block["mean"]["test"]["macro_f1"], (block["sd"] or {}).get("test", {}).get("macro_f1")
        low, high = block.get("pooled_ci95", {}).get("test", {}).get("macro_f1", [None, None])
        spread = f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f} ({block['note']})"
        pooled = f"[{low:.3f}, {high:.3f}]" if low is not None else "n/a"
        ens = backbone_scores[b]["test"]["macro_f1"]
        lines.append(
            f"| {b} | {block['n']} | "
            + ", ".join(f"{s}: {v:.3f}" for s, v in f1.items())
            + f" | {spread} | {pooled} | {ens:.3f} ({ens - mean:+.3f} vs the mean seed) |"
        )
    return lines + [""]


def comparisons_markdown(rows: list[dict]) -> list[str]:
    """The paired comparisons as sentences, one list per statistic."""
    if not rows:
        return []
    split = rows[0]["split"]
    lines = [
        "## Paired comparisons",
        "",
        f"Differences on the same {split} images (A − B), with a paired bootstrap 95% CI that resamples the "
        "images; a backbone with several seeds is its seed ensemble, one fixed model (the seeds' spread is "
        "the Seeds section's). A CI that contains 0 means the data cannot tell the two apart.",
        "",
    ]
    for key in COMPARED:
        lines += (
            [f"{split.capitalize()} {NAMES[key]}:", ""]
            + [f"- {sentence(r['a'], r['b'], key, r[key])}" for r in rows]
            + [""]
        )
    return lines


def external_blocks(cfg: Config, r: Results, fits: dict, predictions_dir: str, models_dir: str | None) -> dict:
    """{set: {model: its `external` entry}} for each external set in params: every run (with its val fit
    and OOD share from models/, as evaluate wrote them), each seed ensemble and the ensemble (their
    fits refitted on val, as combine and ensemble fit them), scored from the runs' predictions with
    evaluate's function (stages/lib/results/external_scores.py `score`)."""
    if not cfg.external:
        return {}
    e, classes = cfg.evaluate, r.classes
    runs = {
        f"{b}/seed{s}": (b, i, seed_run(Path(predictions_dir) / b, s))
        for b in cfg.backbones
        for i, s in enumerate(cfg.seeds)
    }
    out: dict[str, dict] = {name: {} for name in cfg.external}
    if models_dir is not None:
        for run, (b, i, folder) in runs.items():
            model = Path(models_dir) / f"{run}.pt"
            fitted = posthoc.load(model, classes)
            shares = read_json(ood.ood_path(model))["flagged"] if ood.ood_path(model).is_file() else {}
            labels, test = r.runs["test"][b]
            for name, m in ext.score_runs([folder], cfg.external, classes, fitted, (labels, test[i]), e).items():
                share = shares.get(ext.predictions_split(name))
                out[name][run] = {**m, **({"ood": {"flagged": share}} if share is not None else {})}
    for model in [*cfg.backbones, ENSEMBLE]:
        folders = [f for run, (b, _, f) in runs.items() if model in (b, ENSEMBLE)]
        for name, m in ext.score_runs(
            folders, cfg.external, classes, fits[model][0], _mean(r.runs["test"][model]), e
        ).items():
            out[name][model] = m
    return out


def subgroup_blocks(cfg: Config, cache_dir: Path, r: Results, split: str, models) -> dict:
    """Each model's `subgroups` block on the shown split, as evaluate computes it for one run."""
    metadata = subgroups.read_metadata(cache_dir, split)
    columns = subgroups.columns_to_score(metadata, cfg.evaluate.subgroups, f"{cache_dir}/{split}.csv")
    e, out = cfg.evaluate, {}
    for name in models:
        labels, runs = r.runs[split][name]
        overall = r.scores[name][split]["macro_f1"]
        out[name] = {
            "split": split,
            "overall_macro_f1": overall,
            "by": subgroups.subgroup_scores(
                labels, runs.mean(0), metadata, columns, r.classes, overall, e.bootstrap_resamples, e.seed
            ),
        }
    return out


def report(
    cfg: Config,
    predictions_dir: str,
    live_dir: str,
    cache_meta_path: str,
    data_report_path: str,
    figures_dir: str,
    curves_dir: str,
    gradcam_dir: str,
    summary_path: str,
    html_path: str,
    models_dir: str | None = None,
) -> str:
    meta = read_json(cache_meta_path)
    classes = meta["classes"]
    r = collect(cfg, classes, predictions_dir, live_dir)
    shown = shown_split(r)
    # The study's val numbers are comparable only over its four classes.
    study = {
        name: BACKBONES[name].study_val
        for name in cfg.backbones
        if BACKBONES[name].study_val and tuple(classes) == STUDY_CLASSES
    }
    models = [*cfg.backbones, ENSEMBLE]
    outputs = {split: {m: r.outputs[split][m] for m in models} for split in SCORED_SPLITS}

    colours = model_colours(models)  # backbones in params order, then the ensemble: the same in every figure
    data_report = read_json(data_report_path)
    shortcut = data_report.get("shortcut", {})
    e = cfg.evaluate
    class_ci = {n: class_auroc_ci95(*o, e.bootstrap_resamples, e.seed) for n, o in outputs[shown].items()}
    shown_scores = {n: r.scores[n][shown] for n in models}
    # the post-hoc fits, refitted on val with evaluate's functions (as the scores above are)
    fits = {n: posthoc.fit_and_score({split: outputs[split][n] for split in SCORED_SPLITS}, classes, e) for n in models}
    scaled = {
        n: (
            f["temperature"]["value"],
            posthoc.apply(f, outputs[shown][n][1])[0],
            b["temperature"][shown]["ece"]["after"],
        )
        for n, (f, b) in fits.items()
        if shown in b["temperature"]
    }
    # each backbone's seeds: one dot per seed in the comparison, one curve per seed in the training curves
    seeds = {
        b: {
            split: {
                k: [run[split][k] for run in block["runs"].values() if split in run and k in run[split]]
                for k in ("accuracy", "macro_f1", "macro_auroc")
            }
            for split in SCORED_SPLITS
        }
        for b, block in r.seeds.items()
    }
    runs = {b: [h for label, h in r.histories.items() if label.split("/")[0] == b] for b in cfg.backbones}
    best = {b: [run.get("best_epoch") for run in r.seeds[b]["runs"].values()] for b in cfg.backbones}
    figures = {
        "comparison.png": comparison(r.scores, seeds, study, shortcut, colours),
        "confusion_test.png": confusion_grid(
            {n: confusion(o[0], o[1].argmax(1), len(classes)) for n, o in outputs[shown].items()},
            classes,
            f"Confusion matrices, {shown} split",
        ),
        "confusion_val.png": confusion_grid(
            {n: confusion(o[0], o[1].argmax(1), len(classes)) for n, o in outputs["val"].items()},
            classes,
            "Confusion matrices, val split",
        ),
        "roc_test.png": roc_grid(outputs[shown], shown_scores, classes, class_ci, colours, shown),
        "pr_test.png": pr_grid(outputs[shown], shown_scores, classes, colours, shown),
        "reliability_test.png": reliability_grid(
            outputs[shown], shown_scores, e.calibration_bins, colours, shown, scaled
        ),
        "training_curves.png": training_curves(runs, best, colours),
    }
    synthetic = bool(meta.get("synthetic"))
    for filename, fig in figures.items():
        save_figure(fig, Path(figures_dir) / filename, synthetic)
    for split in ("train", "val"):  # `dvc plots show` draws these, one colour per model (dvc.yaml's plots)
        write_text(Path(curves_dir) / f"{split}.csv", curves_csv(r.histories, split))
    captions = figure_captions(shown, e.bootstrap_resamples)
    embedded = [(Path(figures_dir) / f, *captions[f]) for f in figures]
    embedded += [
        (Path(gradcam_dir) / b / f"seed{cfg.seeds[0]}.png", captions["gradcam"][0].format(b=b), captions["gradcam"][1])
        for b in cfg.backbones
    ]
    embedded = [(os.path.relpath(p, Path(summary_path).parent), title, caption) for p, title, caption in embedded]
    sections = (
        seeds_markdown(r.seeds, r.scores)
        + comparisons_markdown(r.comparisons)
        + posthoc_markdown({n: b for n, (_, b) in fits.items()}, shown)
        + subgroups_markdown(subgroup_blocks(cfg, Path(cache_meta_path).parent, r, shown, models))
        + external_markdown(external_blocks(cfg, r, fits, predictions_dir, models_dir), cfg.external)
    )
    sections += sources_lines(data_report.get("sources", []))  # the study's data (make study-data) cites its datasets
    if models_dir is not None:  # the model cards' links, the OOD flag's shares
        sections += cards.summary_lines(models_dir, Path(summary_path).parent, cfg.backbones, cfg.seeds)
    versus = {row["a"]: row["macro_f1"] for row in r.comparisons if row["b"] == SHORTCUT}
    text = summary_markdown(
        r.scores, r.training, classes, synthetic, embedded, study, shortcut, shown, sections, versus
    )
    text += "\n".join(provenance.markdown(provenance.stamp(cfg.model_dump(exclude_none=True), meta.get("data"))))
    write_text(summary_path, text)
    write_text(html_path, html_report(text, Path(summary_path).parent, "CXR-4 results"))
    return text


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--predictions",
        required=True,
        help="folder with <backbone>/seeds/seed<seed>/{val,test}.csv and shortcut/{val,test}.csv",
    )
    parser.add_argument("--live", required=True, help="folder with <backbone>/seed<seed>/ DVCLive logs")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json")
    parser.add_argument("--data-report", required=True, help="preprocess's data report (shortcut audit)")
    parser.add_argument("--figures", required=True, help="folder for the PNG figures")
    parser.add_argument("--curves", required=True, help="folder for the per-epoch curves (train.csv, val.csv)")
    parser.add_argument("--gradcam", required=True, help="folder of the Grad-CAM figures (embedded, not written)")
    parser.add_argument("--summary", required=True, help="Markdown summary to write")
    parser.add_argument("--html", required=True, help="the summary as one self-contained HTML file to write")
    parser.add_argument("--models", help="folder of the models, their cards and OOD scores (linked and summarised)")
    args = parser.parse_args()
    report(
        load_params(),
        args.predictions,
        args.live,
        args.cache_meta,
        args.data_report,
        args.figures,
        args.curves,
        args.gradcam,
        args.summary,
        args.html,
        args.models,
    )
    print(f"wrote {args.summary}, {args.html} and the figures in {args.figures}/")


if __name__ == "__main__":
    main()
