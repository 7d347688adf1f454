"""README.md and docs/ as a reader follows them: every link leads somewhere, and the GPU requirement
they state is the one of the torch build the lock installs. (The README's commands run on the demo
in tests/test_pipeline.py.)"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

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
    """README's paired-comparison example is a line of demo/metrics/summary.md, not a made-up one, and one
    whose verdict no measured change of machine turns: its CI ends farther from 0 than any demo score moved."""
    readme, summary = (ROOT / "README.md").read_text(), (ROOT / "demo" / "metrics" / "summary.md").read_text()
    example = re.search(r"the demo's `(\w+ − \w+ = [^`]+)`", readme.replace("\n", " ")).group(1)
    assert f"- {example}\n" in summary, f"README's example is not in demo/metrics/summary.md: {example}"
    assert f"    {example}\n" in (ROOT / "docs" / "seeds.md").read_text()
    low, high = (float(v.replace("−", "-")) for v in re.search(r"\[(\S+), (\S+)\]", example).groups())
    assert min(abs(low), abs(high)) > demo_spread()[2] and (low > 0) == (high > 0)


def committed_demo_scores() -> tuple[float, float]:
    """Test macro-F1 of ResNet-18 and of the ensemble in the committed demo run."""
    headline = ROOT / "demo" / "metrics" / "headline"
    return tuple(json.loads((headline / f"{m}.json").read_text())["test"]["macro_f1"] for m in ("resnet18", "ensemble"))


def demo_spread() -> tuple[dict, tuple[float, float], float]:
    """(the run of bench/results/demo.json whose ResNet-18 score lies farthest from the committed one, the
    committed scores, that distance)."""
    runs = json.loads((ROOT / "bench" / "results" / "demo.json").read_text())["runs"]
    here = committed_demo_scores()
    far = max(runs, key=lambda r: abs(r["resnet18_test_macro_f1"] - here[0]))
    return far, here, abs(far["resnet18_test_macro_f1"] - here[0])


def test_the_readme_demo_times_and_cross_machine_spread_are_bench_results_demo_json():
    """Each timed run of bench/results/demo.json is in README (its wall time and commit), the quick start's
    range spans them, and the spread README states is the farthest measured run from the committed scores."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    runs = json.loads((ROOT / "bench" / "results" / "demo.json").read_text())["runs"]
    timed = [r for r in runs if r["wall_s"] is not None]
    for r in timed:
        minutes, seconds = divmod(round(r["wall_s"]), 60)
        assert f" {minutes} min {seconds} s on a " in readme, r["wall_s"]
        assert f"`{r['commit'][:7]}`" in readme
        if r["load_mean"] is not None:
            assert f"load average {r['load_mean']:.1f}" in readme and cpu_name(r["machine"]["cpu"]) in readme
    walls = [r["wall_s"] / 60 for r in timed]
    assert f"in demo/: {math.floor(min(walls))} to {math.ceil(max(walls))} min on 2 CPU cores" in readme
    far, (resnet, ensemble), spread = demo_spread()
    assert (
        f"ResNet-18 to test macro-F1 {far['resnet18_test_macro_f1']:.3f} against {resnet:.3f} here, and the "
        f"ensemble to {far['ensemble_test_macro_f1']:.3f} against {ensemble:.3f}" in readme
    )
    assert f"a range at least that wide ({spread:.3f})" in readme
    commit = json.loads((ROOT / "demo" / "metrics" / "resnet18.json").read_text())["provenance"]["git"]["commit"]
    made = next((r for r in runs if r["commit"] == commit), None)  # the committed run, when bench.demo made it
    where = f", the {cpu_name(made['machine']['cpu'])})" if made else ")"
    assert f"It ends with this table (commit `{commit[:7]}`{where}" in readme


def test_the_readme_install_size_is_bench_results_install_json():
    readme = " ".join((ROOT / "README.md").read_text().split())
    size = json.loads((ROOT / "bench" / "results" / "install.json").read_text())
    assert size["torch"] == torch.__version__  # measured on the locked torch build
    assert f"about **{size['venv_gb']:.1f} GB** on disk" in readme
    assert f"its NVIDIA libraries ({size['torch_and_cuda_gb']:.1f} GB" in readme


def test_the_readme_demo_and_study_settings_are_the_params_files():
    import yaml

    readme = " ".join((ROOT / "README.md").read_text().split())
    demo, top = (yaml.safe_load((ROOT / p).read_text()) for p in ("demo/params.yaml", "params.yaml"))
    t, syn = demo["train"], demo["synthetic"]
    assert f"for {t['epochs']} epochs at {demo['preprocess']['img_size']} px from scratch on {syn['train']} " in readme
    assert (
        f"on {syn['val']} val and {syn['test']} test films" in readme and f"`train.threads: {t['threads']}`" in readme
    )
    assert f"{top['preprocess']['img_size']} px, {top['train']['epochs']} epochs, ImageNet weights" in readme


def test_the_real_film_counts_in_readme_and_docs_are_the_real_datas(real_data):
    """The real-film counts each page states, in its own words, are the course set's own CSVs: README's "the
    course set's 240 real X-rays", docs/data.md's "240 real films", docs/seeds.md's "160 train / 40 val / 40 test
    real films", "160 train films" and "40 test films". Each page must still say them so: a reworded page fails
    here instead of passing unread. (README's "90 val and 90 test films" are the synthetic demo's, checked against
    demo/params.yaml above, so README is read for the real X-rays only.)"""
    counts = {s: sum(1 for _ in (real_data / f"{s}_data.csv").open()) - 1 for s in ("train", "val", "test")}
    train, val, test, total = counts["train"], counts["val"], counts["test"], sum(counts.values())
    claims = {  # page: {pattern: what each of its matches must read}
        "README.md": {r"course set's (\d+) real X-rays": (total,)},
        "docs/data.md": {r"(\d+) real films": (total,)},
        "docs/seeds.md": {
            r"(\d+) train / (\d+) val / (\d+) test real films": (train, val, test),
            r"(\d+) train films": (train,),
            r"(\d+) test films": (test,),
        },
    }
    for page, patterns in claims.items():
        text = " ".join((ROOT / page).read_text().split())
        for pattern, expected in patterns.items():
            found = [tuple(map(int, m if isinstance(m, tuple) else (m,))) for m in re.findall(pattern, text)]
            assert found, f"{page} no longer says {pattern!r}: reword the test with the page"
            assert set(found) == {expected}, (page, pattern, found, expected)


def test_the_readme_benchmark_figures_are_the_committed_results():
    """Each figure README states about speed and scale recomputes from bench/results/ (real films: below)."""
    import json

    readme = " ".join((ROOT / "README.md").read_text().split())
    results = {
        n: json.loads((ROOT / "bench" / "results" / f"{n}.json").read_text()) for n in ("loader", "epoch", "scale")
    }
    loader, epoch, scale = results.values()
    # each benchmark named by the machine it ran on: loader and epoch on one, scale on another
    assert loader["machine"]["cpu"] == epoch["machine"]["cpu"]
    cpu = {n: f"{r['machine']['cpu_cores']}-core {cpu_name(r['machine']['cpu'])}" for n, r in results.items()}
    assert f"Quiet, on a {cpu['loader']}: our loader delivers" in readme
    assert f"On a {cpu['scale']}: preprocessing holds" in readme
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


def cpu_name(model: str) -> str:
    """/proc/cpuinfo's model name as the docs write it: 'Intel(R) Xeon(R) Processor' is an Intel Xeon."""
    return re.sub(r"\s+", " ", re.sub(r"\(R\)|\(TM\)|\bProcessor\b|\bCPU\b", "", model)).strip()


def test_the_loader_and_epoch_figures_in_docs_are_the_committed_results():
    doc = " ".join((ROOT / "docs" / "benchmarks.md").read_text().split())
    r = {n: json.loads((ROOT / "bench" / "results" / f"{n}.json").read_text()) for n in ("loader", "epoch", "scale")}
    loader, epoch = r["loader"], r["epoch"]
    machines = [f"{r[n]['machine']['cpu_cores']}-core {cpu_name(r[n]['machine']['cpu'])}" for n in ("loader", "scale")]
    assert f"loader and epoch on a {machines[0]}, scale (and quality) on a {machines[1]}" in doc
    assert loader["machine"] == epoch["machine"]
    low, high = loader["speedup_range"]
    assert (
        f"`loader.json` ({loader['images_per_epoch']} real films, {loader['workers']} worker each side, "
        f"{loader['repeats']} repeats) | **{loader['speedup']:.1f}x** the study's loader at {loader['img_size']} px "
        f"(range {low:.1f}-{high:.1f}; {loader['ours_img_s']['median']:.0f} vs {loader['study_img_s']['median']:.1f} "
        f"img/s); {loader['other_sizes'][0]['speedup']:.1f}x at {loader['other_sizes'][0]['img_size']} px" in doc
    )
    low, high = epoch["speedup_range"]
    assert (
        f"`epoch.json` (ResNet-18, {epoch['train_images']} + {epoch['val_images']} real films, {epoch['repeats']} "
        f"repeats) | **{epoch['speedup']:.2f}x** the study's epoch at {epoch['img_size']} px (range {low:.2f}-"
        f"{high:.2f}; {epoch['ours_s']['median']:.1f} s vs {epoch['study_s']['median']:.1f} s); "
        f"{epoch['other_sizes'][0]['speedup']:.2f}x at {epoch['other_sizes'][0]['img_size']} px" in doc
    )
    b = epoch["breakdown"]
    m, study, ours = b["model_s"], b["loader_s"]["study"], b["loader_s"]["ours"]
    assert (
        f"the model alone took {m['train_pass']:.2f} s for the train pass, {m['train_eval_pass']:.2f} s for the "
        f"study's extra pass and {m['val_pass']:.2f} s for val (`speedup_if_data_were_free` "
        f"{b['speedup_if_data_were_free']:.2f}); the study's loaders alone {study['train']:.2f} + "
        f"{study['train_eval']:.2f} + {study['val']:.2f} s, ours {sum(ours.values()):.2f} s. So the measured "
        f"{epoch['speedup']:.2f}x is {b['speedup_if_data_were_free']:.2f}x" in doc
    )


def test_the_makefiles_quality_time_is_quality_json():
    quality = json.loads((ROOT / "bench" / "results" / "quality.json").read_text())
    makefile = " ".join(line.lstrip("# ") for line in (ROOT / "Makefile").read_text().splitlines())
    m = quality["machine"]
    assert f"{quality['wall_s'] / 60:.0f} min on a {m['cpu_cores']}-core {cpu_name(m['cpu'])}, its wall_s" in makefile
    loader, epoch = (json.loads((ROOT / "bench" / "results" / f"{n}.json").read_text()) for n in ("loader", "epoch"))
    m = loader["machine"]
    assert (
        f"{loader['elapsed_s']:.0f} s and {epoch['elapsed_s']:.0f} s on a {m['cpu_cores']}-core {cpu_name(m['cpu'])} "
        "(their elapsed_s)" in makefile
    )


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
    for name in [*yaml.safe_load((ROOT / "demo" / "params.yaml").read_text())["backbones"], "ensemble"]:
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
    pixel = json.loads((metrics / "pixel_shortcut.json").read_text())
    assert (
        f"| outside the lungs only (pixel shortcut) | | {pixel['test']['macro_f1']:.3f} | | "
        f"{pixel['val']['macro_f1']:.3f} |"
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
