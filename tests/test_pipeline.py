"""The whole DVC pipeline on tiny settings in a temporary copy of the project."""
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np

from conftest import ROOT, TINY, TINY_DEMO, make_project, merge, run, run_paths, stage_cmd

CONTRACT_SPLIT = {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}
NEW_KEYS = {"balanced_accuracy", "weighted_f1", "weighted_precision", "weighted_recall", "macro_auroc",
            "accuracy_ci95", "macro_f1_ci95", "macro_auroc_ci95", "ece", "reliability"}
PNG = b"\x89PNG\r\n\x1a\n"


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_demo_writes_the_metrics_contract_headlines_figures_and_summary(demo_project):
    demo = demo_project / "demo"
    backbones = TINY_DEMO["backbones"]
    for name in backbones + ["ensemble"]:
        m = json.loads((demo / "metrics" / f"{name}.json").read_text())
        for split in ("val", "test"):
            assert set(m[split]) >= CONTRACT_SPLIT | NEW_KEYS
            assert sum(c["support"] for c in m[split]["per_class"].values()) == 16
            for key in ("accuracy", "macro_f1", "macro_auroc"):
                low, high = m[split][f"{key}_ci95"]
                assert 0 <= low <= m[split][key] <= high <= 1
            assert all(0 <= c["auroc"] <= 1 for c in m[split]["per_class"].values())
            assert 0 <= m[split]["ece"] <= 1 and len(m[split]["reliability"]) == 15
        # the headline (the DVC metric) holds the detail file's numbers, nothing else
        head = json.loads((demo / "metrics" / "headline" / f"{name}.json").read_text())
        assert head == {"test": {k: m["test"][k] for k in ("accuracy", "macro_f1", "macro_auroc")},
                        "val": {"macro_f1": m["val"]["macro_f1"]},
                        **({} if name == "ensemble" else {"best_epoch": 1})}
        folder = demo / ("ensemble" if name == "ensemble" else f"predictions/{name}")
        preds = (folder / "test.csv").read_text().splitlines()
        assert preds[0] == "filename,true_label,predicted_label,prob_normal,prob_bacteria,prob_virus,prob_COVID-19"
        probs = np.array([[float(v) for v in row.split(",")[3:]] for row in preds[1:]])
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
        if name != "ensemble":
            assert m["best_epoch"] == 1 and m["epochs_run"] == 1
            assert (demo / run_paths(name)["gradcam"]).read_bytes()[:8] == PNG
            assert m["seeds"]["n"] == 1 and m["seeds"]["note"] == "1 seed: no run-to-run spread measured"
            run = json.loads((demo / run_paths(name)["metrics"]).read_text())
            assert run["seed"] == 42 and m["seeds"]["runs"]["42"]["test"]["macro_f1"] == run["test"]["macro_f1"]
    figures = sorted(p.name for p in (demo / "plots" / "figures").iterdir())
    assert figures == ["comparison.png", "confusion_test.png", "confusion_val.png", "pr_test.png",
                       "reliability_test.png", "roc_test.png", "training_curves.png"]
    assert all((demo / "plots" / "figures" / f).read_bytes()[:8] == PNG for f in figures)
    curves = (demo / "plots" / "curves" / "val.csv").read_text().splitlines()
    assert curves == ["model,epoch,loss,macro_f1,accuracy"] + [
        f"{b},1,{r['loss']!r},{r['macro_f1']!r},{r['accuracy']!r}" for b in backbones
        for r in [json.loads((demo / run_paths(b)["live"] / "metrics.json").read_text())["val"]]]
    summary = (demo / "metrics" / "summary.md").read_text()
    test_table = summary.split("## Test split")[1].split("\n## ")[0]
    assert "SYNTHETIC" in summary and all(f"| {b} | " in test_table for b in backbones + ["ensemble"])
    ens = json.loads((demo / "metrics" / "ensemble.json").read_text())
    assert f"| ensemble | {ens['test']['accuracy']:.3f} [" in test_table
    images = json.loads((demo / "metrics" / "headline" / "data.json").read_text())
    assert images == {"images": sum(TINY_DEMO["synthetic"].values())}
    # Every model against every other, the ensemble and the metadata-only shortcut (its predictions
    # written by preprocess), on the same test images.
    assert len((demo / "predictions" / "shortcut" / "test.csv").read_text().splitlines()) == 1 + 16
    comparisons = summary.split("## Paired comparisons")[1].split("## Provenance")[0]
    pairs = ["resnet18 − efficientnet_b0", "resnet18 − ensemble", "efficientnet_b0 − ensemble",
             "resnet18 − shortcut", "efficientnet_b0 − shortcut", "ensemble − shortcut"]
    assert [line.split(" = ")[0][2:] for line in comparisons.splitlines() if line.startswith("- ")] == pairs * 2
    assert "1 seed: no run-to-run spread measured" in summary


def test_dvc_reads_the_demo_in_a_terminal_and_reruns_only_what_changed(demo_project, tmp_path, monkeypatch):
    demo = demo_project / "demo"
    assert "Data and pipelines are up to date" in run(["dvc", "status"], demo).stdout
    assert stages_run(run(["dvc", "repro"], demo).stdout) == set()

    shown = run(["dvc", "metrics", "show"], demo).stdout
    assert max(len(line) for line in shown.splitlines()) <= 200
    rows = {line.split()[0]: line.split()[1:] for line in shown.splitlines()[1:]}
    assert set(rows) == {f"metrics/headline/{n}.json" for n in ("data", "shortcut", "ensemble", *TINY_DEMO["backbones"])}
    assert shown.split()[:7] == ["Path", "best_epoch", "images", "test.accuracy", "test.macro_auroc", "test.macro_f1",
                                 "val.macro_f1"]

    run(["dvc", "plots", "show", "-o", str(tmp_path / "page")], demo)
    page = (tmp_path / "page" / "index.html").read_text()
    pngs = [*(demo / "plots" / "figures").iterdir(), *(demo / "plots" / "gradcam").rglob("*.png")]
    shown = sorted(Path(src).name for src in re.findall(r'<img[^>]*src="([^"]+)"', page))
    assert shown == sorted("workspace_" + p.relative_to(demo).as_posix().replace("/", "_") for p in pngs)  # each once
    for title in ("val macro-F1 per epoch", "val loss per epoch", "train loss per epoch", "val accuracy per epoch"):
        assert page.count(title) == 1
    assert page.count('"field": "model"') >= 4  # the curves: one colour per model (.dvc/plots/by_model.json)

    # Experiments on a copy: an lr change reruns train/evaluate/ensemble/report and skips preprocess;
    # a CLAHE change reruns everything after the synthetic data.
    proj = tmp_path / "proj"
    shutil.copytree(demo_project, proj, symlinks=True)
    demo = proj / "demo"
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "demo results"], proj)
    backbones = TINY_DEMO["backbones"]
    downstream = ({"ensemble", "report"} | {f"combine@{b}" for b in backbones}
                  | {f"{s}@{b}-42" for s in ("train", "evaluate") for b in backbones})
    lr = run(["dvc", "exp", "run", "-S", "train.lr=1e-4"], demo).stdout
    assert "Stage 'preprocess' didn't change, skipping" in lr
    assert stages_run(lr) == downstream
    clahe = run(["dvc", "exp", "run", "-S", "preprocess.clahe_clip_limit=2.0"], demo).stdout
    assert stages_run(clahe) == {"preprocess"} | downstream

    # A second seed runs only its own train and evaluate stages, then combines: each backbone's result is
    # now its two-seed ensemble, with the seeds' spread beside it.
    more = run(["dvc", "exp", "run", "-S", "seeds=[42,2]"], demo).stdout
    assert stages_run(more) == ({"ensemble", "report"} | {f"combine@{b}" for b in backbones}
                                | {f"{s}@{b}-2" for s in ("train", "evaluate") for b in backbones})
    m = json.loads((demo / "metrics" / "resnet18.json").read_text())
    assert m["seeds"]["n"] == 2 and set(m["seeds"]["runs"]) == {"42", "2"} and "note" not in m["seeds"]
    head = json.loads((demo / "metrics" / "headline" / "resnet18.json").read_text())
    assert head["test"]["macro_f1_sd"] == m["seeds"]["sd"]["test"]["macro_f1"] > 0
    assert json.loads((demo / "metrics" / "ensemble.json").read_text())["members"] == [
        f"{b}/seed{s}" for b in backbones for s in (42, 2)]

    # The README's compact comparison of experiments fits a 200-column terminal.
    command = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("dvc exp show"))
    monkeypatch.setenv("COLUMNS", "1000")
    table = run([*shlex.split(command), "--no-pager"], demo).stdout.splitlines()
    assert max(len(line.rstrip()) for line in table) <= 200
    assert "ensemble.json:test.macro_f1" in table[1] and "train.lr" in table[1] and len(table) >= 6


def readme_commands(prefix: str) -> list[list[str]]:
    """The command lines of README.md that start with `prefix`, as argv."""
    return [shlex.split(line) for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(prefix)]


def test_the_readme_predict_commands_reproduce_evaluate_after_the_demo(demo_project, tmp_path):
    """README's quick start: after `make demo`, cxr4-predict on the demo's test films gives evaluate's
    probabilities, and the course's submission format."""
    commands = readme_commands("cxr4-predict ")
    assert len(commands) == 2 and commands[1][-1] == "--submission"
    outs = []
    for argv in commands:
        out = argv.index("--out") + 1
        argv[out] = str(tmp_path / argv[out])  # written beside the test, not into the shared demo run
        assert "16 images classified" in run(argv, demo_project).stdout
        outs.append(Path(argv[out]))
    demo = demo_project / "demo"
    ours = {r.split(",")[0]: np.array(r.split(",")[2:], float) for r in outs[0].read_text().splitlines()[1:]}
    evaluated = (demo / run_paths("resnet18")["predictions"] / "test.csv").read_text().splitlines()[1:]
    assert len(ours) == len(evaluated) == 16
    for row in evaluated:
        name = row.split(",")[0]
        np.testing.assert_allclose(ours[name], np.array(row.split(",")[3:], float), atol=1e-5)

    lines = outs[1].read_text().splitlines()
    assert lines[0] == "new_filename,normal,bacteria,virus,COVID-19" and len(lines) == 17
    assert all(sorted(line.split(",")[1:]) == ["0", "0", "0", "1"] for line in lines[1:])
    assert [line.split(",")[0] for line in lines[1:]] == list(ours)


def test_stage_errors_are_one_line_with_exit_code_2(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", None, TINY, git=False)
    missing = run(stage_cmd("preprocess"), proj, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "data folder data not found" in missing.stderr

    # A backbone without a registry record is refused when params load, before any stage works.
    (proj / "params.yaml").write_text((proj / "params.yaml").read_text().replace("- efficientnet_b0", "- vgg16"))
    bad = run(stage_cmd("train", "vgg16"), proj, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: params.yaml: backbones lists 'vgg16', which has no record in stages/lib/models.py (records: "
        "resnet18, densenet121, efficientnet_b0, convnext_tiny); add its record there or remove the name")
    assert not (proj / "models").exists()


def test_real_xrays_preprocess_train_and_evaluate(tmp_path, real_data):
    proj = make_project(tmp_path / "proj", None, merge(TINY, {"backbones": ["resnet18"]}), git=False)
    (proj / "data").symlink_to(real_data)
    out = run(stage_cmd("preprocess"), proj).stdout
    assert "train: 160 images normal 40, bacteria 40, virus 40, COVID-19 40" in out
    # The shortcut audit: COVID-19 films are all 640 px PNGs, the rest JPEGs, so metadata alone finds them.
    shortcut = json.loads((proj / "metrics" / "data_report.json").read_text())["shortcut"]
    assert set(shortcut) == {"val", "test", "features"} and "format=PNG" in shortcut["features"]
    assert shortcut["test"]["per_class_recall"]["COVID-19"] == 1.0 and shortcut["test"]["macro_f1"] > 0.6
    assert f"shortcut audit (test): file metadata alone reaches macro-F1 {shortcut['test']['macro_f1']:.3f}" in out
    meta = json.loads((proj / "cache" / "meta.json").read_text())
    assert meta["counts"]["val"] == {"normal": 10, "bacteria": 10, "virus": 10, "COVID-19": 10}
    assert meta["synthetic"] is False
    images = np.load(proj / "cache" / "train.npy", mmap_mode="r")
    assert images.shape == (160, 32, 32) and images.dtype == np.uint8 and images.std() > 10

    run(stage_cmd("train", "resnet18"), proj)
    run(stage_cmd("evaluate", "resnet18"), proj)
    run(stage_cmd("combine", "resnet18"), proj)
    m = json.loads((proj / "metrics" / "resnet18.json").read_text())
    assert all(m["test"]["per_class"][c]["support"] == 10 for c in ("normal", "bacteria", "virus", "COVID-19"))
    history = (proj / run_paths("resnet18")["live"] / "plots" / "metrics" / "val" / "macro_f1.tsv").read_text()
    assert history.splitlines()[0] == "step\tmacro_f1" and len(history.splitlines()) == 2

    run(stage_cmd("ensemble"), proj)
    run(stage_cmd("report"), proj)
    summary = (proj / "metrics" / "summary.md").read_text()
    assert "## Shortcut audit" in summary and f"macro-F1 **{shortcut['test']['macro_f1']:.3f}**" in summary
    # the warning follows the paired comparison with the shortcut (comparisons.beats), both ways
    paired = re.search(r"^- (resnet18 − shortcut = .*)$", summary, re.MULTILINE).group(1)  # macro-F1's list is first
    warned = "WARNING: resnet18 does not clearly beat the metadata-only shortcut" in summary
    assert warned != paired.endswith(": resnet18 better") and (not warned or paired in summary.split("## Seeds")[0])


def test_hidden_test_labels_are_predicted_not_scored(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    names = [line.split(",")[0] for line in (data / "test_data.csv").read_text().splitlines()]
    (data / "test_data.csv").write_text("\n".join(names) + "\n")  # new_filename only: labels hidden
    proj = make_project(tmp_path / "proj", data, merge(TINY, {"backbones": ["resnet18"]}))
    run(["dvc", "repro"], proj)
    for name in ("resnet18", "ensemble"):
        m = json.loads((proj / "metrics" / f"{name}.json").read_text())
        assert m["test"] is None and "labels hidden" in m["test_note"]
        assert m["val"]["per_class"]["normal"]["support"] == 3
    rows = (proj / "predictions" / "resnet18" / "test.csv").read_text().splitlines()[1:]
    assert len(rows) == 12 and all(r.split(",")[1] == "" for r in rows)
    summary = (proj / "metrics" / "summary.md").read_text()
    assert "| resnet18 | labels hidden |" in summary.split("## Test split")[1] and "## Per class (val)" in summary
