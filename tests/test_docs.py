"""README.md and docs/ as a reader follows them: every link leads somewhere, and the GPU requirement
they state is the one of the torch build the lock installs. (The README's commands run on the demo
in tests/test_pipeline.py.)"""

import re
from pathlib import Path

import pytest
import torch

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}: no such heading in {linked.name}"


def test_the_stated_gpu_requirement_is_the_locked_torch_build():
    """README and docs/gpu.md say: torch <locked version>, CUDA 13.0, compute capability 7.5 or newer."""
    locked = re.search(r"^torch==([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert torch.__version__.split("+")[0] == locked
    assert torch.version.cuda == "13.0"
    capabilities = sorted(int(arch.removeprefix("sm_")) for arch in torch.cuda.get_arch_list())
    assert capabilities[0] == 75
    for page in (ROOT / "README.md", ROOT / "docs" / "gpu.md"):
        text = " ".join(page.read_text().split())
        assert f"torch {locked}" in text and "CUDA 13.0" in text and "compute capability 7.5 or newer" in text


def test_the_readme_comparison_example_is_the_committed_demo_summarys():
    """README's paired-comparison example is a line of demo/metrics/summary.md, not a made-up one."""
    readme, summary = (ROOT / "README.md").read_text(), (ROOT / "demo" / "metrics" / "summary.md").read_text()
    example = re.search(r"the demo's `(resnet18 − densenet121 = [^`]+)`", readme.replace("\n", " ")).group(1)
    assert f"- {example}\n" in summary, f"README's example is not in demo/metrics/summary.md: {example}"
    assert f"    {example}\n" in (ROOT / "docs" / "seeds.md").read_text()


def test_the_readme_benchmark_figures_are_the_committed_results():
    """Each figure README states about speed and scale recomputes from bench/results/ (real films: below)."""
    import json

    readme = " ".join((ROOT / "README.md").read_text().split())
    results = {
        n: json.loads((ROOT / "bench" / "results" / f"{n}.json").read_text()) for n in ("loader", "epoch", "scale")
    }
    loader, epoch, scale = results.values()
    assert f"{loader['speedup']:.1f}x the study's images/s" in readme
    assert f"1/{epoch['speedup']:.2f} of its time ({epoch['breakdown']['speedup_if_data_were_free']:.2f}x" in readme
    rates = [r["img_s_per_core"] for r in scale["sizes"]]
    assert f"{min(rates):.0f}-{max(rates):.0f} images/s per core" in readme
    assert f"~{scale['extrapolated_100k_s'] / 60:.0f} min projected" in readme
    assert scale["max_peak_rss_mb"] < 1024 and "its own process under 1 GB" in readme
    assert f"it and its workers {scale['max_peak_pss_mb']:.0f} MB at most (PSS" in readme


NAMES = {
    "resnet18": "ResNet-18",
    "densenet121": "DenseNet-121",
    "efficientnet_b0": "EfficientNet-B0",
    "convnext_tiny": "ConvNeXt-Tiny",
}
SHORTCUT_WORDS = {
    "shortcut": "file metadata only (size, format, dimensions, bit depth)",
    "pixel_shortcut": "the film outside the lungs only (the lungs hidden)",
}


def signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def test_the_readme_real_film_figures_are_the_committed_quality_json():
    """README's real-film section: the seed ensembles' gains, both shortcuts with their CIs, every model minus the
    stronger shortcut with "clearly better" exactly where the one rule says so, and the lungs-hidden scores."""
    import json

    readme = " ".join((ROOT / "README.md").read_text().split())
    q = json.loads((ROOT / "bench" / "results" / "quality.json").read_text())
    gains = [r["seed_ensemble_gain"] for r in q["backbones"].values()]
    assert f"the seed ensembles add {min(gains):+.3f} to {max(gains):+.3f} test macro-F1" in readme
    for name, words in SHORTCUT_WORDS.items():
        assert f"{words} {q[f'{name}_test_macro_f1']:.3f} {ci(q[f'{name}_test_macro_f1_ci95'])}" in readme
    best = q["stronger_shortcut"]
    assert best == max(SHORTCUT_WORDS, key=lambda n: q[f"{n}_test_macro_f1"])
    assert f"minus the stronger ({SHORTCUT_WORDS[best].split(' (')[0]}), paired 95% CI:" in readme
    verdicts = {NAMES[b]: (r[f"minus_{best}"], r["beats_stronger_shortcut"]) for b, r in q["backbones"].items()}
    runs = sum(len(r["test_macro_f1"]["runs"]) for r in q["backbones"].values())
    verdicts[f"all {runs} runs"] = (q[f"ensemble_minus_{best}"], q["ensemble_beats_stronger_shortcut"])
    for name, (sentence, beats) in verdicts.items():
        diff = signed_of(sentence)
        assert f"{name} {diff}" in readme
        assert (f"{name} {diff} (clearly better)" in readme) == beats, name
    blocks = [r["lungs_hidden"] for r in q["backbones"].values()]
    assert ("every seed ensemble calls every film one class" in readme) == all(map(one_answer, blocks))
    assert ("no class is read from outside the lungs" in readme) == (not any(b["read_outside_lungs"] for b in blocks))


def one_answer(block: dict) -> bool:
    """True when a lungs-hidden block's model called every film the same class."""
    return any(v.get("other_films_called_it") == 1 and v.get("recall") == 1 for v in block["per_class"].values())


def test_the_seeds_doc_real_film_tables_are_the_committed_quality_json():
    """docs/seeds.md's real-film tables, row by row, and the machine and commit they name, from quality.json."""
    import json

    doc = (ROOT / "docs" / "seeds.md").read_text()
    text = " ".join(doc.split())
    q = json.loads((ROOT / "bench" / "results" / "quality.json").read_text())
    assert (
        f"at commit `{q['commit'][:7]}`" in text
        and f"({q['machine']['cpu']}, {q['machine']['cpu_cores']} cores)" in text
    )
    assert f"{q['wall_s']:.0f} s" in text
    for b, r in q["backbones"].items():
        t = r["test_macro_f1"]
        assert (
            f"| {b} | {' / '.join(f'{v:.3f}' for v in t['runs'].values())} | {t['mean']:.3f} ± {t['sd']:.3f} | "
            f"{r['seed_ensemble_test_macro_f1']:.3f} ({r['seed_ensemble_gain']:+.3f}) | "
            f"{' / '.join(str(e) for e in r['best_epochs'].values())} |"
        ) in doc, b
    rows = {b: (r, r["lungs_hidden"]) for b, r in q["backbones"].items()}
    rows[f"all {sum(len(r['test_macro_f1']['runs']) for r in q['backbones'].values())} runs"] = (
        {k.removeprefix("ensemble_"): v for k, v in q.items() if k.startswith("ensemble_")},
        q["ensemble_lungs_hidden"],
    )
    for name, (r, h) in rows.items():
        recall = " / ".join(f"{v['recall_with_lungs']:.2f} → {v['recall']:.2f}" for v in h["per_class"].values())
        assert (
            f"| {name} | {signed_of(r['minus_shortcut'])} | {signed_of(r['minus_pixel_shortcut'])} | "
            f"{h['macro_f1']:.3f} {ci(h['macro_f1_ci95'])} | {recall} | {', '.join(h['read_outside_lungs']) or 'none'} |"
        ) in doc, name
    for name, label in (
        ("shortcut", "file metadata only (shortcut audit)"),
        ("pixel_shortcut", "outside the lungs only (pixel shortcut)"),
    ):
        recall = " / ".join(f"{v:.2f}" for v in q[f"{name}_test_recall"].values())
        assert f"| {label} | {q[f'{name}_test_macro_f1']:.3f} {ci(q[f'{name}_test_macro_f1_ci95'])} | {recall} |" in doc
    assert (
        f"val chose the {q['pixel_shortcut_chosen']} of its {len(q['pixel_shortcut_val_macro_f1_of_each_candidate'])} candidates"
        in text
    )
    # the bullets' figures and claims
    h = q["hide_lungs"]
    assert f"With the central box ({(h['bottom'] - h['top']) * (h['right'] - h['left']):.0%} of each film" in text
    spans = [q["backbones"][b]["test_macro_f1"]["runs"].values() for b in ("resnet18", "densenet121")]
    assert f"{NAMES['resnet18']}'s {len(spans[0])} seeds span {min(spans[0]):.3f} to {max(spans[0]):.3f}" in text
    assert f"{NAMES['densenet121']}'s {min(spans[1]):.3f} to {max(spans[1]):.3f}" in text
    met = sum(g["met"] for g in q["goal"].values())
    assert (
        f"more than {q['goal']['resnet18']['gain_at_least']} over the mean seed for {['no', 'one', 'two', 'three', 'four'][met]} of four backbones"
        in text
    )
    assert (
        q["backbones"]["convnext_tiny"]["seed_ensemble_gain"] < 0
        and "ConvNeXt-Tiny's scores below its mean seed" in text
    )
    both = [b for b, r in q["backbones"].items() if r["beats_shortcut"] and r["beats_pixel_shortcut"]]
    neither = [b for b, r in q["backbones"].items() if not (r["beats_shortcut"] or r["beats_pixel_shortcut"])]
    assert (
        len(both) == len(neither) == 2 and "Two backbones clearly beat both shortcuts; two do not beat either." in text
    )
    answers = {
        b: next(c for c, v in r["lungs_hidden"]["per_class"].items() if v["recall"] == 1)
        for b, r in q["backbones"].items()
    }
    assert all(one_answer(r["lungs_hidden"]) for r in q["backbones"].values())
    assert (
        sorted(answers.values()) == ["COVID-19", "COVID-19", "COVID-19", "normal"]
        and answers["efficientnet_b0"] == "normal"
    )
    assert "(COVID-19 for three, normal for EfficientNet-B0)" in text


def signed_of(sentence: str) -> str:
    """'a − b = +0.080 [−0.080, +0.231]: not distinguishable' -> '+0.080 [−0.080, +0.231]'."""
    return sentence.split(" = ")[1].split(":")[0]


def test_the_scale_figures_in_docs_are_the_committed_scale_json():
    import json

    doc = " ".join((ROOT / "docs" / "benchmarks.md").read_text().split())
    scale = json.loads((ROOT / "bench" / "results" / "scale.json").read_text())
    g, cores = scale["growth"], scale["target"]["cores"]
    assert " / ".join(f"{r['img_s_per_core']:.1f}" for r in scale["sizes"]) + " img/s per core" in doc
    assert "peaks at " + " / ".join(f"{r['peak_rss_mb']:.0f}" for r in scale["sizes"]) + " MB RSS" in doc
    assert (
        f"~{scale['extrapolated_100k_s']:.0f} s in all: decoding and CLAHE ~{g['decode_clahe']['at_130k_s'] / cores:.0f} s"
        in doc
    )
    assert (
        f"hashing ~{g['hashing']['at_130k_s'] / cores:.0f} s, the leakage check ~{g['leakage']['at_130k_s']:.0f} s"
        in doc
    )
    serial = sum(g[p]["at_130k_s"] for p in ("layout", "shortcut", "write_cache", "report", "other"))
    assert f"the other parts in the stage's one process ~{serial:.0f} s" in doc


def test_the_readme_demo_table_is_the_committed_demo_metrics():
    """Every number of README's demo table recomputes from demo/metrics/ (the committed run)."""
    import json

    readme = (ROOT / "README.md").read_text()
    metrics = ROOT / "demo" / "metrics"
    for name in ("resnet18", "densenet121", "efficientnet_b0", "convnext_tiny", "ensemble"):
        m = json.loads((metrics / f"{name}.json").read_text())
        t = m["test"]

        def ci(key, t=t):
            return f"{t[key]:.3f} [{t[f'{key}_ci95'][0]:.3f}, {t[f'{key}_ci95'][1]:.3f}]"

        label = "ensemble (mean of the four)" if name == "ensemble" else name
        assert (
            f"| {label} | {ci('accuracy')} | {ci('macro_f1')} | {t['macro_auroc']:.3f} | {m['val']['macro_f1']:.3f} |"
        ) in readme, name
    shortcut = json.loads((metrics / "data_report.json").read_text())["shortcut"]
    assert (
        f"| file metadata only (shortcut audit) | | {shortcut['test']['macro_f1']:.3f} | | "
        f"{shortcut['val']['macro_f1']:.3f} |"
    ) in readme
    assert len(readme.splitlines()) < 200


def test_the_shortcut_doc_states_the_committed_box_and_features():
    """docs/shortcuts.md's box, rim share, grid, bins and threshold are the committed params and code."""
    from stages.lib.params.loader import load_params
    from stages.lib.results.lungs_hidden import KEEP

    doc = " ".join((ROOT / "docs" / "shortcuts.md").read_text().split())
    cfg = load_params(ROOT / "params.yaml")
    h, p = cfg.hide_lungs, cfg.pixel_shortcut
    edges = {round(h.top, 9), round(h.left, 9), round(1 - h.bottom, 9), round(1 - h.right, 9)}
    assert len(edges) == 1, "the doc describes a box equally far in from each edge"
    assert f"The default, {h.top:.0%} in from each edge (rows and columns {h.top:.0%}-{h.bottom:.0%}" in doc
    assert f"the rim left visible is {1 - (h.bottom - h.top) * (h.right - h.left):.0%} of the film" in doc
    assert f"keeps its central {cfg.preprocess.center_crop_ratio:.0%}" in doc
    assert (
        f"`{p.grid}` x" not in doc
        and f"({p.grid} x {p.grid}:" in doc
        and f"histogram of the rim's grey levels ({p.bins}:" in doc
    )
    assert f"(`lungs_hidden.KEEP` = {KEEP})" in doc and "set to (0, black" in doc and h.fill == 0
    from bench.quality import PROTOCOL

    assert f"cached at {PROTOCOL['preprocess']['img_size']} px (the `make quality` protocol)" in doc
