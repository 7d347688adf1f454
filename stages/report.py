"""Stage `report`: predictions + DVCLive logs -> figures (PNG), per-epoch curves (CSV for `dvc plots`)
and metrics/summary.md: every model's numbers with CIs, each backbone's seeds, and paired
comparisons of the models with each other, the ensemble and both shortcuts (file metadata only, the
film outside the lungs only), each model with the lungs hidden; and the summary again as one
self-contained HTML file (metrics/report.html).

The numbers are recomputed from the per-image predictions with the functions evaluate, combine and
ensemble use (`score_split`, `seed_block`, external `score`, seeded bootstraps), so they match
metrics/<model>.json exactly; reading those JSON files instead would need a dependency on metrics/,
where this stage writes summary.md.

`write_report` is the stage, top to bottom: every model's results collected from the predictions and logs
(stages/lib/results/model_results.py), the post-hoc fits refitted on val, the figures drawn, the per-epoch
curves written, the summary's sections composed, and the summary and its HTML written.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from stages.lib.core import provenance
from stages.lib.core.backbones import BACKBONES
from stages.lib.core.errors import cli
from stages.lib.core.files import read_json, write_text
from stages.lib.core.names import ENSEMBLE, PIXEL_SHORTCUT, SHORTCUT, SHORTCUTS, STUDY_CLASSES
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config
from stages.lib.report.figures import figure_links, report_figures
from stages.lib.report.html import html_report
from stages.lib.report.plots import save_figure
from stages.lib.report.run_plots import curves_csv
from stages.lib.report.summary import model_cards_lines, sources_lines, summary_markdown
from stages.lib.report.summary_sections import (
    comparisons_markdown,
    external_markdown,
    lungs_hidden_markdown,
    posthoc_markdown,
    seeds_markdown,
    subgroups_markdown,
)
from stages.lib.results.model_results import (
    Results,
    collect,
    external_blocks,
    lungs_hidden_blocks,
    posthoc_fits,
    shown_split,
    subgroup_blocks,
)


@dataclass(frozen=True)
class ReportPaths:
    """The report stage's paths, one per flag of its command line (dvc.yaml)."""

    predictions: str  # <backbone>/seeds/seed<seed>/{val,test}.csv and shortcut/{val,test}.csv
    live: str  # <backbone>/seed<seed>/ DVCLive logs
    cache_meta: str  # the preprocess cache's meta.json (its folder holds the split CSVs' metadata)
    data_report: str  # preprocess's data report (shortcut audit, sources)
    figures: str  # folder for the PNG figures
    curves: str  # folder for the per-epoch curves (train.csv, val.csv)
    gradcam: str  # folder of evaluate's Grad-CAM figures (embedded, not written)
    summary: str  # Markdown summary to write
    html: str  # the summary as one HTML file to write
    models: str | None = None  # folder of the models, their cards and OOD scores (linked and summarised)
    pixel_shortcut: str | None = None  # the pixel shortcut's metrics (what it sees, the classifier val chose)


def write_report(cfg: Config, paths: ReportPaths) -> str:
    """Write the figures, curves, summary and HTML report; return the summary's Markdown."""
    meta, data_report = read_json(paths.cache_meta), read_json(paths.data_report)
    classes, synthetic = meta["classes"], bool(meta.get("synthetic"))
    r = collect(cfg, classes, paths.predictions, paths.live)
    shown, study = shown_split(r), study_numbers(cfg.backbones, classes)
    shortcuts = described_shortcuts(r, data_report, read_json(paths.pixel_shortcut) if paths.pixel_shortcut else {})
    fits = posthoc_fits(r, [*cfg.backbones, ENSEMBLE], cfg.evaluate)
    figures = report_figures(cfg, r, fits, study, shortcuts)
    for filename, fig in figures.items():
        save_figure(fig, Path(paths.figures) / filename, synthetic)
    for split in ("train", "val"):  # `dvc plots show` draws these, one colour per model (dvc.yaml's plots)
        write_text(Path(paths.curves) / f"{split}.csv", curves_csv(r.histories, split))
    summary_dir = Path(paths.summary).parent
    embedded = figure_links(list(figures), cfg, shown, paths.figures, paths.gradcam, summary_dir)
    sections = summary_sections(cfg, r, fits, data_report, paths)
    versus: dict = {}
    for row in r.comparisons:
        if row["b"] in SHORTCUTS:
            versus.setdefault(row["a"], {})[row["b"]] = row["macro_f1"]
    text = summary_markdown(
        r.scores, r.training, classes, synthetic, embedded, study, shortcuts, shown, sections, versus
    )
    text += "\n".join(provenance.markdown(provenance.stamp(cfg.model_dump(exclude_none=True), meta.get("data"))))
    write_text(paths.summary, text)
    write_text(paths.html, html_report(text, summary_dir, "CXR-4 results"))
    return text


def described_shortcuts(r: Results, data_report: dict, pixel: dict) -> dict:
    """{shortcut: {split: its metrics, recomputed from its predictions (None dropped), "about": what it sees}}."""
    features = ", ".join(data_report.get("shortcut", {}).get("features", []))
    about = {
        SHORTCUT: f"a random forest on file metadata only ({features}), no pixels",
        PIXEL_SHORTCUT: f"{pixel.get('sees', 'the film outside the lungs only')}; {pixel.get('chosen', 'a classifier')}, "
        "picked on val",
    }
    return {
        name: {**{split: m for split, m in r.shortcuts[name].items() if m is not None}, "about": about[name]}
        for name in SHORTCUTS
    }


def study_numbers(backbones, classes) -> dict[str, tuple[float, float]]:
    """The study's val (accuracy, macro-F1) of each backbone it reported; comparable only over its four classes."""
    return {
        name: BACKBONES[name].study_val
        for name in backbones
        if BACKBONES[name].study_val and tuple(classes) == STUDY_CLASSES
    }


def summary_sections(cfg: Config, r: Results, fits: dict, data_report: dict, paths: ReportPaths) -> list[str]:
    """The summary's sections between the shortcut audit and the per-class table: seeds, paired comparisons,
    post-hoc fits, subgroups, external sets, the lungs hidden, the data's sources, and the model cards with
    their OOD flags."""
    shown, models = shown_split(r), [*cfg.backbones, ENSEMBLE]
    sections = (
        seeds_markdown(r.seeds, r.scores)
        + comparisons_markdown(r.comparisons)
        + posthoc_markdown({n: b for n, (_, b) in fits.items()}, shown)
        + subgroups_markdown(subgroup_blocks(cfg, Path(paths.cache_meta).parent, r, shown, models))
        + external_markdown(external_blocks(cfg, r, fits, paths.predictions, paths.models), cfg.external)
        + lungs_hidden_markdown(lungs_hidden_blocks(cfg, r, paths.predictions, models), r.scores)
    )
    sections += sources_lines(data_report.get("sources", []))  # the study's data (make study-data) cites its datasets
    if paths.models is not None:  # the model cards' links, the OOD flag's shares
        sections += model_cards_lines(paths.models, Path(paths.summary).parent, cfg.backbones, cfg.seeds)
    return sections


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--predictions",
        required=True,
        help="folder with <backbone>/seeds/seed<seed>/{val,test}.csv, shortcut/ and pixel_shortcut/",
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
    parser.add_argument(
        "--pixel-shortcut", help="the pixel shortcut's metrics (what it sees, the classifier val chose)"
    )
    args = parser.parse_args()
    write_report(load_params(), ReportPaths(**vars(args)))
    print(f"wrote {args.summary}, {args.html} and the figures in {args.figures}/")


if __name__ == "__main__":
    main()
