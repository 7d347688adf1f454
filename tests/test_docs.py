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


def test_the_readme_benchmark_and_real_film_figures_are_the_committed_results():
    """Each figure README states about speed, scale and real films recomputes from bench/results/."""
    import json

    readme = " ".join((ROOT / "README.md").read_text().split())
    results = {
        n: json.loads((ROOT / "bench" / "results" / f"{n}.json").read_text())
        for n in ("loader", "epoch", "scale", "quality")
    }
    loader, epoch, scale, quality = results.values()
    assert f"{loader['speedup']:.1f}x the study's images/s" in readme
    assert f"1/{epoch['speedup']:.2f} of its time ({epoch['breakdown']['speedup_if_data_were_free']:.2f}x" in readme
    rates = [r["img_s_per_core"] for r in scale["sizes"]]
    assert f"{min(rates):.0f}-{max(rates):.0f} images/s per core" in readme
    assert f"~{scale['extrapolated_100k_s'] / 60:.0f} min projected" in readme
    assert scale["max_peak_rss_mb"] < 1024 and "its own process under 1 GB" in readme
    assert f"it and its workers {scale['max_peak_pss_mb']:.0f} MB at most (PSS" in readme
    names = {
        "resnet18": "ResNet-18",
        "densenet121": "DenseNet-121",
        "efficientnet_b0": "EfficientNet-B0",
        "convnext_tiny": "ConvNeXt-Tiny",
    }
    for b, r in quality["backbones"].items():
        assert f"{names[b]} {r['test_macro_f1']['mean']:.3f} ± {r['test_macro_f1']['sd']:.3f}" in readme
    gains = [r["seed_ensemble_gain"] for r in quality["backbones"].values()]
    assert f"add {min(gains):+.3f} to {max(gains):+.3f}" in readme
    assert f"scores {quality['shortcut_test_macro_f1']:.3f}" in readme
    # each model's paired difference to the shortcut, and "clearly better" exactly where the one rule says so
    verdicts = {names[b]: (r["minus_shortcut"], r["beats_shortcut"]) for b, r in quality["backbones"].items()}
    runs = sum(len(r["test_macro_f1"]["runs"]) for r in quality["backbones"].values())
    verdicts[f"all {runs} runs"] = (quality["ensemble_minus_shortcut"], quality["ensemble_beats_shortcut"])
    for name, (sentence, beats) in verdicts.items():
        diff = sentence.split(" = ")[1].split(":")[0]
        assert f"{name} {diff}" in readme
        assert (f"{name} {diff} (clearly better)" in readme) == beats, name


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
