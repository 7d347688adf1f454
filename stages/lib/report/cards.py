"""Model cards: `<model>.card.md` beside each model, written from its metrics file and the data report.

Nothing in a card is typed by hand: every number comes from the metrics JSON that evaluate (one run),
combine (a backbone's seed ensemble) or ensemble (every run) wrote, and from preprocess's data report;
the research-use notice is docs/notice.md's. Blocks that only some runs have (external validation,
subgroups, temperature, conformal coverage, the OOD flag) appear when the metrics file holds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json, write_text
from stages.lib.core.names import PIXEL_SHORTCUT, SHORTCUT, run_name
from stages.lib.core.provenance import code_words
from stages.lib.report.card_data import data_lines, recipe, shortcut_lines, what_it_is
from stages.lib.report.card_format import data_stamp, images
from stages.lib.report.card_metrics import (
    calibration_lines,
    external_lines,
    lungs_hidden_lines,
    metrics_lines,
    ood_lines,
    subgroup_lines,
)

NOTICE = str(Path(__file__).resolve().parents[3] / "docs" / "notice.md")


def add_arguments(parser) -> None:
    """The card's command-line arguments, shared by the stages that write metrics (paths from dvc.yaml)."""
    parser.add_argument("--card", help="model card to write (Markdown, beside the model: <model>.card.md)")
    parser.add_argument("--data-report", default="metrics/data_report.json", help="preprocess's data report")
    parser.add_argument(
        "--notice",
        default=NOTICE,
        help="the research-use notice the card quotes (default: the project's docs/notice.md, beside the code)",
    )
    parser.add_argument(
        "--pixel-shortcut",
        default="metrics/pixel_shortcut.json",
        help="the pixel shortcut's metrics (stage pixel_shortcut): the card compares the model with it",
    )


# params: the card, the model's name, the files it is written from (metrics, data report, notice, the pixel
# shortcut's metrics) and whether the data is synthetic: the command line of the stages that write cards.
def write_card(
    out: str | os.PathLike,
    name: str,
    metrics_path: str | os.PathLike,
    data_report_path: str | os.PathLike,
    notice_path: str | os.PathLike,
    synthetic: bool = False,
    pixel_shortcut_path: str | os.PathLike | None = None,
) -> str:
    """Write the card of model `name` to `out` from its metrics file (and the pixel shortcut's, when given);
    refused while either is missing."""
    for path, stage in ((metrics_path, "evaluate"), (pixel_shortcut_path, "pixel_shortcut")):
        if path is not None and not Path(path).is_file():
            raise UserError(
                f"no metrics for {name if stage == 'evaluate' else 'the pixel shortcut'} yet ({path} not found): "
                f"a card is written from them; run {stage} first (dvc repro)"
            )
    text = card_markdown(
        name,
        read_json(metrics_path),
        read_json(data_report_path),
        notice(notice_path),
        os.path.relpath(metrics_path, Path(out).parent),
        synthetic,
        read_json(pixel_shortcut_path) if pixel_shortcut_path is not None else None,
    )
    write_text(out, text)
    return text


def notice(path: str | os.PathLike) -> str:
    """docs/notice.md's first paragraph (the one-paragraph research-use notice)."""
    try:
        paragraphs = Path(path).read_text(encoding="utf-8").split("\n\n")
    except FileNotFoundError as err:
        raise UserError(
            f"{path} not found: the model card quotes its research-use notice; restore docs/notice.md"
        ) from err
    return " ".join(next(p for p in paragraphs if not p.startswith("#")).split())


# params: the model's name, the three files' contents it is written from, its metrics' link, whether synthetic.
def card_markdown(
    name: str,
    m: dict,
    data: dict,
    research_notice: str,
    metrics_link: str,
    synthetic: bool = False,
    pixel: dict | None = None,
) -> str:
    """The card of model `name` from its metrics `m`, the data report `data` and the pixel shortcut's metrics
    `pixel`: test metrics, or val when test labels are hidden."""
    split = "test" if m.get("test") else "val"
    lines = intro_lines(name, m, split, research_notice, metrics_link) + data_lines(data)
    if synthetic:
        lines += ["> **SYNTHETIC data**: drawn shapes, not X-rays; the numbers below say nothing about medicine.", ""]
    lines += ["## Recipe", ""] + recipe(m) + [""]
    lines += metrics_lines(m, split)
    if isinstance(m.get("external"), dict) and m["external"]:
        lines += external_lines(m["external"])
    if isinstance(m.get("subgroups"), dict):
        lines += subgroup_lines(m["subgroups"], split)
    if isinstance(m.get("lungs_hidden"), dict):
        lines += lungs_hidden_lines(m["lungs_hidden"], m[m["lungs_hidden"]["split"]])
    lines += calibration_lines(m, split)
    shortcuts = {SHORTCUT: data.get("shortcut") or {}, PIXEL_SHORTCUT: pixel or {}}
    lines += ["", "## Shortcut audit", ""] + shortcut_lines(m, shortcuts, split)
    if isinstance(m.get("ood"), dict):
        lines += ood_lines(m["ood"])
    lines += limitation_lines(images(m[split]), split) + provenance_lines(m.get("provenance") or {})
    return "\n".join(lines)


def intro_lines(name: str, m: dict, split: str, research_notice: str, metrics_link: str) -> list[str]:
    """The title, the research-use notice, where the card comes from, what the model is, its intended use."""
    return [
        f"# Model card: {name}",
        "",
        f"> **Research use only: not for diagnosis, not a medical device.** {research_notice}",
        "",
        f"Written by the pipeline from [{metrics_link}]({metrics_link}) and the data report; do not edit "
        "(`dvc repro` rewrites it).",
        "",
        "## Model",
        "",
        f"- What: {what_it_is(name, m)}.",
        f"- Output: one probability per class ({', '.join(m[split]['per_class'])}) for a frontal chest X-ray.",
        "",
        "## Intended use",
        "",
        "Research on classifying frontal chest X-rays into the classes above and on comparing networks on the "
        "data described below. Not for diagnosis, treatment, triage or any clinical decision; not for lateral "
        "views, other body parts or other modalities (`cxr4-predict` flags such films where an OOD score is "
        "fitted, but does not refuse them).",
        "",
        "## Data",
        "",
    ]


def limitation_lines(n: int | None, split: str) -> list[str]:
    """What the numbers do not show, `n` the images of `split` they come from."""
    return [
        "## Known limitations",
        "",
        f"- {n} {split} images: the CIs above are that wide; a difference inside them is not evidence.",
        "- The numbers hold for data like the data above (its hospitals, devices, ages, label sources), "
        "not for other populations; validate on your own films before relying on any of them.",
        "- Four classes only: any other finding is forced into one of them.",
        "- A film unlike the training films (OOD flag true) may still receive a confident class.",
        "",
    ]


def provenance_lines(prov: dict) -> list[str]:
    """The code's commit, the data's DVC stamp, and where the params are (the metrics file's `provenance`)."""
    git = prov.get("git") or {}
    return [
        "## Provenance",
        "",
        f"- Code: {code_words(git)}",
        f"- Data: {data_stamp(prov.get('data'))}",
        "- Params: the recipe above; every value in the metrics file's `provenance`.",
        "",
    ]


def summary_lines(models_dir: str | os.PathLike, summary_dir: str | os.PathLike, backbones, seeds) -> list[str]:
    """The summary's links to every model card, and the share of films each run's OOD score flags on each
    set its `<model>.ood.json` records (val, test and each external set, `external/<name>`)."""
    models_dir = Path(models_dir)

    def link(label: str, path: Path) -> str:
        return f"[{label}]({os.path.relpath(path, summary_dir)})"

    lines = [
        "## Model cards",
        "",
        "Each model's card: intended use, data, recipe, test and external metrics with CIs per "
        "class, the lungs hidden, calibration, the shortcut audit, limitations and provenance, written from its "
        "metrics file.",
        "",
    ]
    for b in backbones:
        runs = ", ".join(link(f"seed {s}", models_dir / f"{run_name(b, s)}.card.md") for s in seeds)
        lines.append(f"- {link(b, models_dir / f'{b}.card.md')} (its seed ensemble; runs: {runs})")
    lines += [f"- {link('ensemble', models_dir / 'ensemble.card.md')}", ""]
    fitted = {run_name(b, s): models_dir / f"{run_name(b, s)}.ood.json" for b in backbones for s in seeds}
    shares = {run: read_json(p).get("flagged", {}) for run, p in fitted.items() if p.is_file()}
    sets = list(dict.fromkeys(k for v in shares.values() for k in v))
    if shares and sets:
        lines += [
            "## Out-of-distribution flag",
            "",
            "`cxr4-predict` flags a film (`ood_flag` true) that lies further from the training films (in the "
            "network's features or the film's layout) than 95% of val films do (docs/predict.md). Share of "
            "films flagged per run:",
            "",
            "| Run | " + " | ".join(sets) + " |",
            "|---|" + "---:|" * len(sets),
        ]
        lines += [
            f"| {run} | " + " | ".join(f"{v[k]:.1%}" if k in v else "" for k in sets) + " |"
            for run, v in shares.items()
        ] + [""]
    return lines
