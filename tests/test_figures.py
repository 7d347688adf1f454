"""Figures, summary and HTML report as a reader relies on them: sizes, panels, legend values, marks."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import skip_unless_ci
from stages.lib.core.errors import UserError
from stages.lib.model import gradcam
from stages.lib.model.networks import build_model
from stages.lib.report.class_curves import pr_grid, reliability_grid, roc_grid
from stages.lib.report.html import html_report
from stages.lib.report.plots import (
    COLUMN,
    PAGE,
    SYNTHETIC_MARK,
    confusion_grid,
    gradcam_grid,
    model_colours,
    save_figure,
)
from stages.lib.report.run_plots import comparison, training_curves
from stages.lib.report.summary import summary_markdown
from stages.lib.results.metrics import METRICS, bootstrap_ci, class_auroc_ci95, confusion, split_metrics

CLASSES = ["normal", "bacteria", "virus", "COVID-19"]
MODELS = ["resnet18", "densenet121", "efficientnet_b0", "ensemble"]
STUDY = {"resnet18": (0.818, 0.846), "densenet121": (0.838, 0.836)}
SHORTCUT = {
    "val": {"macro_f1": 0.41, "per_class_recall": {c: 0.4 for c in CLASSES}},
    "test": {"macro_f1": 0.38, "per_class_recall": {c: 0.4 for c in CLASSES}},
    "about": "file metadata",
}
SHORTCUTS = {"shortcut": SHORTCUT}


def outputs_of(n: int, seed: int):
    """(labels, probs) of `n` images for each model, every class present, models of rising skill."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, name in enumerate(MODELS):
        labels = np.arange(n) % 4
        logits = rng.normal(0, 1, (n, 4))
        logits[np.arange(n), labels] += 0.5 + k * 0.5
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        out[name] = (labels, probs)
    return out


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def results():
    outputs = {"val": outputs_of(40, 1), "test": outputs_of(48, 2)}
    scores = {m: {s: split_metrics(*outputs[s][m], CLASSES, 200, 0) for s in outputs} for m in MODELS}
    return outputs, scores


def histories():
    def curve(start, end):
        return [(e, float(v)) for e, v in enumerate(np.linspace(start, end, 4), 1)]

    return {
        m: [
            {
                s: {"loss": curve(1.2, 0.4), "macro_f1": curve(0.3, 0.7), "accuracy": curve(0.3, 0.8)}
                for s in ("train", "val")
            }
        ]
        for m in MODELS[:-1]
    }


def all_figures(results):
    outputs, scores = results
    test = {m: scores[m]["test"] for m in MODELS}
    colours = model_colours(MODELS)
    cams = [
        [
            {
                "image": np.full((32, 32), 120, np.uint8),
                "heat": np.linspace(0, 1, 1024).reshape(32, 32),
                "caption": f"correct: true {c}\npredicted {c} (p=0.90)",
            }
        ]
        * 2
        for c in CLASSES
    ]
    return {
        "comparison": comparison(scores, study=STUDY, shortcuts=SHORTCUTS, colours=colours),
        "confusion": confusion_grid(
            {m: confusion(o[0], o[1].argmax(1), 4) for m, o in outputs["test"].items()}, CLASSES, "Confusion"
        ),
        "roc": roc_grid(outputs["test"], test, CLASSES, None, colours),
        "pr": pr_grid(outputs["test"], test, CLASSES, colours),
        "reliability": reliability_grid(outputs["test"], test, 15, colours),
        "training": training_curves(histories(), {m: [3] for m in MODELS[:-1]}, colours),
        "gradcam": gradcam_grid(cams, "Grad-CAM"),
    }


def panels(fig) -> list:
    """The figure's data panels (no colour bars), in every subfigure."""
    return [
        ax
        for ax in fig.findobj(lambda a: hasattr(a, "get_subplotspec") and a.get_subplotspec() is not None)
        if ax.get_label() != "<colorbar>"
    ]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_every_figure_is_printed_at_column_or_page_width_with_8pt_text_and_3_panels_a_row(results):
    for name, fig in all_figures(results).items():
        fig.canvas.draw()
        assert fig.get_figwidth() in (COLUMN, PAGE), name
        small = {
            (t.get_text(), t.get_fontsize())
            for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 8
        }
        assert not small, f"{name}: text under 8 pt: {small}"
        rows = {}
        for ax in panels(fig):
            if ax.get_visible() and not (name == "gradcam" and ax.get_subplotspec().colspan.start):
                rows.setdefault(round(ax.get_window_extent().y1 / 20), []).append(ax)
        assert max(len(r) for r in rows.values()) <= 3, name  # Grad-CAM: an example is an image pair


def test_each_model_has_one_colour_in_every_figure(results):
    colours = model_colours(MODELS)
    assert colours["ensemble"] == "#000000" and len(set(colours.values())) == len(MODELS)
    by_model = json.loads((Path(__file__).parents[1] / ".dvc/plots/by_model.json").read_text())
    assert by_model["encoding"]["color"]["scale"]["range"][:3] == [colours[m] for m in MODELS[:3]]
    assert by_model["encoding"]["color"]["sort"] is None  # `dvc plots`: models in params order, not alphabetical
    figs = all_figures(results)
    for name in ("roc", "pr"):
        for ax in panels(figs[name]):
            lines = {ln.get_label().split()[0]: ln.get_color() for ln in ax.get_lines()}
            assert {m: lines[m] for m in MODELS} == colours, name


def test_roc_and_pr_legends_hold_the_metrics_values_with_chance_and_prevalence(results):
    outputs, scores = results
    test = {m: scores[m]["test"] for m in MODELS}
    ci = {m: class_auroc_ci95(*outputs["test"][m], 200, 0) for m in MODELS}
    roc, pr = roc_grid(outputs["test"], test, CLASSES, ci), pr_grid(outputs["test"], test, CLASSES)
    assert len(panels(roc)) == len(panels(pr)) == 4  # one per class
    for c, (r, p, cls) in enumerate(zip(panels(roc), panels(pr), CLASSES)):
        auroc = {m: test[m]["per_class"][cls]["auroc"] for m in MODELS}
        assert legend_texts(r) == [f"{m} {auroc[m]:.2f} [{ci[m][c][0]:.2f}, {ci[m][c][1]:.2f}]" for m in MODELS] + [
            "chance (0.50)"
        ]
        assert all(ci[m][c][0] <= auroc[m] <= ci[m][c][1] for m in MODELS)
        ap = [test[m]["per_class"][cls]["average_precision"] for m in MODELS]
        assert legend_texts(p) == [f"{m} {v:.2f}" for m, v in zip(MODELS, ap)] + ["prevalence 0.25"]
        prevalence = next(ln for ln in p.get_lines() if ln.get_label() == "prevalence 0.25")
        assert set(prevalence.get_ydata()) == {0.25}


def test_class_auroc_cis_use_the_macro_bootstrap_draws():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    probs = np.clip(np.stack([1 - labels * 0.6, labels * 0.6], 1) + rng.normal(0, 0.2, (60, 2)), 0.01, None)
    probs /= probs.sum(1, keepdims=True)
    macro = bootstrap_ci(labels, probs, METRICS["macro_auroc"].batch, 300, 7)
    # two classes: each one-vs-rest AUROC is the macro AUROC, resample by resample
    np.testing.assert_allclose(class_auroc_ci95(labels, probs, 300, 7), [macro, macro])
    assert class_auroc_ci95(np.zeros(5, int), np.full((5, 2), 0.5), 50, 0) == [[None, None], [None, None]]


def test_study_values_only_on_val_and_seed_dots_only_with_several_seeds(results):
    _, scores = results
    pixel = {"val": {"macro_f1": 0.5}, "test": {"macro_f1": 0.45}}
    fig = comparison(scores, study=STUDY, shortcuts={**SHORTCUTS, "pixel_shortcut": pixel})
    axes = {ax.get_title(): ax for ax in panels(fig)}
    assert sorted(axes) == sorted(f"{s}: {m}" for s in ("val", "test") for m in ("accuracy", "macro-F1", "macro AUROC"))
    marked = {title for title, ax in axes.items() if any(a.get_gid() == "study" for a in ax.get_children())}
    assert marked == {"val: accuracy", "val: macro-F1"}
    study = next(a for a in axes["val: macro-F1"].get_children() if a.get_gid() == "study")
    assert list(study.get_xdata()[:2]) == [STUDY["resnet18"][1], STUDY["densenet121"][1]]
    for name, s in (("shortcut", SHORTCUT), ("pixel_shortcut", pixel)):  # each shortcut's line, at its score
        lines = {t: a for t, ax in axes.items() for a in ax.get_children() if a.get_gid() == name}
        assert set(lines) == {"val: macro-F1", "test: macro-F1"}
        assert [lines[f"{split}: macro-F1"].get_xdata()[0] for split in ("val", "test")] == [
            s["val"]["macro_f1"],
            s["test"]["macro_f1"],
        ]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "metadata-only shortcut" in legend and "pixel shortcut (outside the lungs)" in legend
    assert not any(a.get_gid() == "seed" for ax in axes.values() for a in ax.get_children())
    assert "1 seed: no run-to-run spread" in [t.get_text() for t in fig.legends[0].get_texts()]

    seeds = {
        m: {
            "seeds": [1, 2, 3],
            **{s: {k: [0.5, 0.6, 0.7] for k in ("accuracy", "macro_f1", "macro_auroc")} for s in ("val", "test")},
        }
        for m in MODELS
    }
    fig = comparison(scores, seeds=seeds)
    dots = [a for ax in panels(fig) for a in ax.get_children() if a.get_gid() == "seed"]
    assert len(dots) == 6 * len(MODELS) and all(list(d.get_xdata()) == [0.5, 0.6, 0.7] for d in dots)
    assert "each seed (n=3)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_synthetic_data_is_marked_on_the_figure_and_in_the_file(results, tmp_path):
    for synthetic in (True, False):
        fig = all_figures(results)["comparison"]
        save_figure(fig, tmp_path / "f.png", synthetic=synthetic)
        marks = [t for t in fig.texts if t.get_gid() == "synthetic"]
        assert [t.get_text() for t in marks] == ([SYNTHETIC_MARK] if synthetic else [])
        assert ("SYNTHETIC" in Image.open(tmp_path / "f.png").text["Description"]) is synthetic


def test_confusion_cells_hold_count_and_row_percentage(results):
    outputs, _ = results
    cm = {m: confusion(o[0], o[1].argmax(1), 4) for m, o in outputs["test"].items()}
    fig = confusion_grid(cm, CLASSES, "Confusion")
    ax = panels(fig)[0]
    cells = [t.get_text() for t in ax.texts]
    expected = [
        f"{cm['resnet18'][i, j]}\n{cm['resnet18'][i, j] / cm['resnet18'][i].sum():.0%}"
        for i in range(4)
        for j in range(4)
    ]
    assert cells == expected and len(panels(fig)) == len(MODELS)


def test_reliability_shows_the_metrics_bins_counts_and_ece(results):
    outputs, scores = results
    fig = reliability_grid(outputs["test"], {m: scores[m]["test"] for m in MODELS}, 15)
    axes = panels(fig)
    assert len(axes) == 2 * len(MODELS)  # a curve and its histogram per model
    for m, curve, bars in zip(MODELS, axes[::2], axes[1::2]):
        assert curve.get_title() == f"{m}: ECE {scores[m]['test']['ece']:.3f}"
        counts = [p.get_height() for p in bars.patches]
        assert counts == [b["count"] for b in scores[m]["test"]["reliability"]]


def test_training_curves_share_y_per_column_and_star_the_best_epoch():
    fig = training_curves(histories(), {m: [3] for m in MODELS[:-1]})
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == [
        f"{s} {m}" for s in ("train", "val") for m in ("loss", "macro-F1", "accuracy")
    ]
    for c in range(3):
        assert axes[c].get_shared_y_axes().joined(axes[c], axes[c + 3])
    assert not axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    stars = [ln for ln in axes[4].get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 3 and all(list(s.get_xdata()) == [3] for s in stars)


def test_gradcam_picks_correct_and_misclassified_images_of_each_class():
    labels = np.array([2, 0, 0, 1, 2, 0, 3, 1])
    predicted = np.array([2, 1, 0, 1, 0, 0, 3, 1])
    assert gradcam.pick_examples(labels, predicted, 2, 4) == [[2, 1], [3, 7], [0, 4], [6]]
    assert gradcam.pick_examples(labels, predicted, 3, 4)[0] == [2, 1, 5]  # the other kind fills in


def test_no_heatmap_below_a_7x7_feature_map_and_the_figure_says_why():
    model = build_model("resnet18", 4, 0.1, pretrained=False)
    assert gradcam.feature_map_size(model, "resnet18", 64) == (2, 2)
    assert gradcam.feature_map_size(model, "resnet18", 224) == (7, 7)
    assert gradcam.too_coarse("resnet18", 224, (7, 7)) is None
    why = gradcam.too_coarse("resnet18", 64, (2, 2))
    assert "2x2, under 7x7" in why and "preprocess.img_size >= 224" in why
    image = torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8)
    fig = gradcam_grid(
        [[{"image": image[0, 0].numpy(), "heat": None, "caption": "correct: true normal"}]], "resnet18", why
    )
    assert why in fig.get_suptitle() and len(panels(fig)) == 1
    assert not fig.findobj(lambda a: a.get_label() == "<colorbar>")


def test_gradcam_shows_the_image_beside_a_translucent_perceptual_heatmap_with_a_colour_bar():
    examples = [
        [
            {
                "image": np.zeros((32, 32), np.uint8),
                "heat": np.ones((32, 32)),
                "caption": f"{kind}: true {c}\npredicted virus (p=0.60)",
            }
            for kind in ("correct", "MISCLASSIFIED")
        ]
        for c in CLASSES
    ]
    fig = gradcam_grid(examples, "t")
    axes = panels(fig)
    assert len(axes) == 16  # 4 classes x 2 examples x (image, overlay)
    raw, overlay = axes[0], axes[1]
    assert [im.get_cmap().name for im in raw.images] == ["gray"]
    assert [im.get_cmap().name for im in overlay.images] == ["gray", "inferno"] and overlay.images[1].get_alpha() < 0.6
    assert fig.findobj(lambda a: a.get_label() == "<colorbar>")
    captions = [sub.get_suptitle() for sub in fig.findobj(lambda a: type(a).__name__ == "SubFigure") if sub._suptitle]
    assert "MISCLASSIFIED: true COVID-19\npredicted virus (p=0.60)" in captions


def summary(results, shortcuts=SHORTCUTS, **optional):
    _, scores = results
    figures = [("../plots/figures/comparison.png", "Models compared", "Dot = estimate.")]
    training = {m: {"best_epoch": 3, "epochs_run": 4} for m in MODELS[:-1]}
    return summary_markdown(scores, training, CLASSES, True, figures, STUDY, shortcuts, "test", **optional)


def test_summary_is_a_results_section_with_a_table_per_split(results):
    _, scores = results
    text = summary(results)
    val, test = text.split("## Validation split")[1].split("## Test split")
    test = test.split("## Shortcut audit")[0]
    assert "Study acc / F1" in val and "Study" not in test  # the study measured val
    for m in MODELS:
        for split, table in (("val", val), ("test", test)):
            s = scores[m][split]
            assert (
                f"| {m} | {s['accuracy']:.3f} [{s['accuracy_ci95'][0]:.3f}, {s['accuracy_ci95'][1]:.3f}] | "
                f"{s['macro_f1']:.3f} ["
            ) in table
    assert "| *metadata only, no pixels (shortcut audit)* | | 0.410 |" in val and "| 0.380 |" in test
    assert "SYNTHETIC DATA" in text.split("##")[0]
    assert "![Models compared](../plots/figures/comparison.png)" in text
    pc = scores["resnet18"]["test"]["per_class"]["virus"]
    assert (
        f"| resnet18 | virus | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['auroc']:.3f} | "
        f"{pc['average_precision']:.3f} | {pc['support']} |" in text
    )
    assert "## Seeds" not in text and "## Paired comparisons" not in text  # the report stage adds them


def test_a_class_absent_from_val_is_absent_in_the_summary_which_names_the_macro_averages_it_changed():
    outputs = {"val": outputs_of(40, 1), "test": outputs_of(48, 2)}
    covid = {m: outputs["val"][m][0] != 3 for m in MODELS}  # val without its COVID-19 films
    outputs["val"] = {m: (y[covid[m]], p[covid[m]]) for m, (y, p) in outputs["val"].items()}
    scores = {m: {s: split_metrics(*outputs[s][m], CLASSES, 50, 0, where=s) for s in outputs} for m in MODELS}
    text = summary_markdown(scores, {}, CLASSES, True, [], STUDY, SHORTCUTS, "val")
    val, test = text.split("## Validation split")[1].split("## Test split")
    assert (
        "> **Not in val: COVID-19.** No precision, recall, F1 or AUROC exists for it (n/a, not 0). The val macro "
        "averages (macro-F1, macro precision, macro recall, balanced accuracy, macro AUROC) are over the 3 classes "
        "present (normal, bacteria, virus)" in val
    )
    assert "Not in" not in test.split("## ")[0]  # test has every class
    per_class = text.split("## Per class (val)")[1]
    assert "| resnet18 | COVID-19 | not in val | | | | | 0 |" in per_class and "| COVID-19 | 0.000 |" not in per_class


def test_summary_places_the_seed_and_comparison_sections_after_the_shortcut_audit(results):
    sections = ["## Seeds", "", "| resnet18 | 2 | 42: 0.500, 7: 0.600 |", "", "## Paired comparisons", ""]
    text = summary(results, sections=sections)
    order = [
        text.index(h)
        for h in (
            "## Test split",
            "## Shortcut audit",
            "## Seeds",
            "## Paired comparisons",
            "## Per class (test)",
            "## Figures",
        )
    ]
    assert order == sorted(order) and "| resnet18 | 2 | 42: 0.500, 7: 0.600 |" in text


def test_the_shortcut_warning_follows_the_paired_comparison_the_one_rule(results):
    """A model beats the shortcut when its paired CI against it lies above 0 (comparisons.beats), whatever
    its own unpaired CI says; a model with no comparison is not said to beat it."""
    from stages.lib.results.comparisons import verdict

    _, scores = results
    assert all(scores[m]["test"]["macro_f1_ci95"][0] > SHORTCUT["test"]["macro_f1"] for m in MODELS[2:])
    paired = {
        m: {"shortcut": {"difference": 0.2, "ci95": ci, "verdict": verdict(ci)}}
        for m, ci in (("resnet18", [0.05, 0.3]), ("efficientnet_b0", [-0.01, 0.3]), ("ensemble", [0.0, 0.3]))
    }
    audit = summary(results, versus_shortcut=paired).split("## Shortcut audit")[1].split("\n## ")[0]
    warned = {m for m in MODELS if f"WARNING: {m} does not clearly beat the stronger shortcut, `shortcut`" in audit}
    assert warned == {"densenet121", "efficientnet_b0", "ensemble"}
    assert "paired: efficientnet_b0 − shortcut = +0.200 [−0.010, +0.300]: not distinguishable)" in audit
    assert "paired: not compared)" in audit


def test_every_model_is_judged_against_the_stronger_of_the_two_shortcuts(results):
    """With the pixel shortcut above the metadata one, the verdict is each model's paired CI against the pixel
    shortcut: beating the weaker one is not enough."""
    from stages.lib.results.comparisons import verdict

    _, scores = results
    pixel = {
        split: {"macro_f1": 0.6, "per_class": {c: {"recall": 0.7, "support": 10} for c in CLASSES}}
        for split in ("val", "test")
    }
    shortcuts = {**SHORTCUTS, "pixel_shortcut": {**pixel, "about": "the film outside the lungs"}}

    def d(ci):
        return {"difference": 0.1, "ci95": ci, "verdict": verdict(ci)}

    # every model beats the metadata shortcut; only resnet18 beats the pixel one
    paired = {m: {"shortcut": d([0.05, 0.3]), "pixel_shortcut": d([-0.1, 0.2])} for m in MODELS}
    paired["resnet18"]["pixel_shortcut"] = d([0.01, 0.2])
    text = summary(results, shortcuts=shortcuts, versus_shortcut=paired)
    audit = text.split("## Shortcut audit")[1].split("\n## ")[0]
    warned = {
        m for m in MODELS if f"WARNING: {m} does not clearly beat the stronger shortcut, `pixel_shortcut`" in audit
    }
    assert warned == set(MODELS) - {"resnet18"} and "The stronger, `pixel_shortcut` (0.600)" in audit
    assert "Its test macro-F1: **0.600** (recall per class: normal 0.70, bacteria 0.70" in audit
    test = text.split("## Test split")[1].split("\n## ")[0]
    assert "| *outside the lungs only (pixel shortcut)* | | 0.600 | | | | | |\n" in test
    # the weaker stronger: with the pixel shortcut below the metadata one, the metadata one judges
    low = {**shortcuts, "pixel_shortcut": {split: {**pixel[split], "macro_f1": 0.2} for split in pixel}}
    audit = summary(results, shortcuts=low, versus_shortcut=paired).split("## Shortcut audit")[1]
    assert "The stronger, `shortcut` (0.380)" in audit and "WARNING" not in audit.split("\n## ")[0]


def test_html_report_inlines_every_image_and_refuses_a_missing_one(tmp_path):
    (tmp_path / "plots").mkdir()
    png = tmp_path / "plots" / "a.png"
    Image.new("RGB", (4, 3), "red").save(png)
    page = html_report(
        "# R\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![A](plots/a.png)\n\n<script>x()</script>\n", tmp_path, "T"
    )
    assert "<table>" in page and "<script>" not in page  # raw HTML in the Markdown is escaped
    src = re.findall(r'<img src="([^"]+)"', page)
    assert src == ["data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()]
    with pytest.raises(UserError, match="plots/b.png"):
        html_report("![B](plots/b.png)", tmp_path, "T")


# --- the report in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        skip_unless_ci(
            "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it): "
            "the HTML report is unchecked"
        )


needs_chromium = pytest.mark.usefixtures("chromium")
# Headless, no GPU, no background traffic of the browser's own, and no host resolves.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
PROBE = (
    '<script>addEventListener("load", () => { const p = document.createElement("pre"); p.id = "probe"; '
    "p.textContent = JSON.stringify([...document.images].map(i => i.naturalWidth)); "
    "document.body.appendChild(p); });</script>"
)


def open_in_chromium(page: Path, work: Path) -> dict:
    """Load `page` in headless Chromium: a screenshot, the requests the page itself made (from Chromium's
    NetLog; the browser's own have no origin), and each image's decoded width (a probe on a copy)."""
    shot, netlog, probe = work / "shot.png", work / "net.json", work / "probe.html"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={work / 'p1'}",
            f"--log-net-log={netlog}",
            "--window-size=1200,1800",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        p["url"]
        for e in log["events"]
        if e["type"] == start
        for p in [e.get("params", {})]
        if "url" in p and p.get("initiator") != "not an origin"
    ]
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={work / 'p2'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    widths = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1))
    return {"screenshot": np.asarray(Image.open(shot).convert("L")), "requests": requests, "widths": widths}


@needs_chromium
def test_the_browser_check_catches_an_external_request_and_a_broken_image(tmp_path):
    page = tmp_path / "cdn.html"
    page.write_text(
        '<html><body><h1>x</h1><img src="data:image/png;base64,AAAA">'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script></body></html>'
    )
    seen = open_in_chromium(page, tmp_path)
    assert seen["requests"] == ["https://cdn.jsdelivr.net/npm/vega@5"] and seen["widths"] == [0]


@needs_chromium
def test_the_html_report_renders_offline_in_chromium(demo_project, tmp_path):
    demo = demo_project / "demo"
    page = demo / "metrics" / "report.html"
    text = page.read_text()
    figures = [*(demo / "plots" / "figures").iterdir(), *(demo / "plots" / "gradcam").rglob("*.png")]
    assert "<script" not in text and text.count('<img src="data:image/png;base64,') == len(figures)
    seen = open_in_chromium(page, tmp_path)
    assert seen["requests"] == []
    assert len(seen["widths"]) == len(figures) and min(seen["widths"]) > 0  # every figure decoded
    shot = seen["screenshot"]
    assert shot.std() > 20 and (shot < 200).mean() > 0.02, "blank page"


def test_the_demo_summary_embeds_every_figure_and_marks_synthetic_pngs(demo_project):
    demo = demo_project / "demo"
    text = (demo / "metrics" / "summary.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    pngs = [*(demo / "plots" / "figures").iterdir(), *(demo / "plots" / "gradcam").rglob("*.png")]
    assert sorted((demo / "metrics" / link).resolve() for link in links) == sorted(p.resolve() for p in pngs)
    for png in pngs:
        image = Image.open(png)
        assert "SYNTHETIC" in image.text["Description"] and image.size[0] <= PAGE * 300, png.name
