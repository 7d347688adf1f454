"""The whole DVC pipeline on tiny settings in a temporary copy of the project."""

import csv
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import CLASS_NAMES, ROOT, TINY, TINY_DEMO, make_project, merge, run, run_paths, stage_cmd
from stages.lib.core.backbones import BACKBONES, REGISTRY
from stages.lib.results import posthoc
from stages.lib.results.posthoc import apply_temperature

CONTRACT_SPLIT = {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}
NEW_KEYS = {
    "balanced_accuracy",
    "weighted_f1",
    "weighted_precision",
    "weighted_recall",
    "macro_auroc",
    "accuracy_ci95",
    "macro_f1_ci95",
    "macro_auroc_ci95",
    "ece",
    "reliability",
}
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
            assert sum(c["support"] for c in m[split]["per_class"].values()) == TINY_DEMO["synthetic"][split]
            for key in ("accuracy", "macro_f1", "macro_auroc"):
                low, high = m[split][f"{key}_ci95"]
                assert 0 <= low <= m[split][key] <= high <= 1
            assert all(0 <= c["auroc"] <= 1 for c in m[split]["per_class"].values())
            assert 0 <= m[split]["ece"] <= 1 and len(m[split]["reliability"]) == 15
        # the headline (the DVC metric) holds the detail file's numbers, nothing else
        head = json.loads((demo / "metrics" / "headline" / f"{name}.json").read_text())
        assert head == {
            "test": {k: m["test"][k] for k in ("accuracy", "macro_f1", "macro_auroc")},
            "val": {"macro_f1": m["val"]["macro_f1"]},
            **({} if name == "ensemble" else {"best_epoch": 1}),
        }
        folder = demo / ("ensemble" if name == "ensemble" else f"predictions/{name}")
        preds = (folder / "test.csv").read_text().splitlines()
        assert preds[0] == "filename,true_label,predicted_label,prob_normal,prob_bacteria,prob_virus,prob_COVID-19"
        probs = np.array([[float(v) for v in row.split(",")[3:]] for row in preds[1:]])
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
        # post-hoc fits on val, judged on test: the blocks a reader looks for, with CIs
        assert m["temperature"]["val"]["nll"]["after"] <= m["temperature"]["val"]["nll"]["before"]
        low, high = m["coverage"]["test"]["coverage_ci95"]
        assert m["coverage"]["alpha"] == 0.1 and 0 <= low <= m["coverage"]["test"]["coverage"] <= high <= 1
        assert set(m["coverage"]["test"]["per_class"]) == set(CLASS_NAMES)
        assert (
            set(m["operating_points"]) == {"COVID-19"}
            and "sensitivity_ci95" in m["operating_points"]["COVID-19"]["test"]
        )
        if name != "ensemble":
            assert m["best_epoch"] == 1 and m["epochs_run"] == 1
            sidecar = json.loads((demo / "models" / name / "seed42.calibration.json").read_text())
            run_metrics = json.loads((demo / run_paths(name)["metrics"]).read_text())
            assert sidecar["temperature"]["value"] == run_metrics["temperature"]["value"]
            # every film's file format and bit depth are subgroups (the demo's films: 8-bit PNG and JPEG)
            groups = run_metrics["subgroups"]
            assert groups["split"] == "test" and set(groups["by"]) == {"format", "bit_depth"}
            n_test = TINY_DEMO["synthetic"]["test"]
            assert set(groups["by"]["format"]) <= {"PNG", "JPEG"} and groups["by"]["bit_depth"]["8"]["n"] == n_test
            assert sum(g["n"] for g in groups["by"]["format"].values()) == n_test
            assert groups["by"]["bit_depth"]["8"]["macro_f1"] == run_metrics["test"]["macro_f1"]  # the whole split
            assert (demo / run_paths(name)["gradcam"]).read_bytes()[:8] == PNG
            assert m["seeds"]["n"] == 1 and m["seeds"]["note"] == "1 seed: no run-to-run spread measured"
            run = json.loads((demo / run_paths(name)["metrics"]).read_text())
            assert run["seed"] == 42 and m["seeds"]["runs"]["42"]["test"]["macro_f1"] == run["test"]["macro_f1"]
    figures = sorted(p.name for p in (demo / "plots" / "figures").iterdir())
    assert figures == [
        "comparison.png",
        "confusion_test.png",
        "confusion_val.png",
        "pr_test.png",
        "reliability_test.png",
        "roc_test.png",
        "training_curves.png",
    ]
    assert all((demo / "plots" / "figures" / f).read_bytes()[:8] == PNG for f in figures)
    curves = (demo / "plots" / "curves" / "val.csv").read_text().splitlines()
    assert curves == ["model,epoch,loss,macro_f1,accuracy"] + [
        f"{b},1,{r['loss']!r},{r['macro_f1']!r},{r['accuracy']!r}"
        for b in backbones
        for r in [json.loads((demo / run_paths(b)["live"] / "metrics.json").read_text())["val"]]
    ]
    summary = (demo / "metrics" / "summary.md").read_text()
    test_table = summary.split("## Test split")[1].split("\n## ")[0]
    assert "SYNTHETIC" in summary and all(f"| {b} | " in test_table for b in backbones + ["ensemble"])
    ens = json.loads((demo / "metrics" / "ensemble.json").read_text())
    assert f"| ensemble | {ens['test']['accuracy']:.3f} [" in test_table
    images = json.loads((demo / "metrics" / "headline" / "data.json").read_text())
    assert images == {"images": sum(TINY_DEMO["synthetic"][s] for s in ("train", "val", "test"))}
    # Every model against every other, the ensemble and the metadata-only shortcut (its predictions
    # written by preprocess), on the same test images.
    assert len((demo / "predictions" / "shortcut" / "test.csv").read_text().splitlines()) == 1 + 16
    comparisons = summary.split("## Paired comparisons")[1].split("\n## ")[0]
    pairs = [
        "resnet18 − efficientnet_b0",
        "resnet18 − ensemble",
        "efficientnet_b0 − ensemble",
        "resnet18 − shortcut",
        "efficientnet_b0 − shortcut",
        "ensemble − shortcut",
        "resnet18 − pixel_shortcut",
        "efficientnet_b0 − pixel_shortcut",
        "ensemble − pixel_shortcut",
    ]
    assert [line.split(" = ")[0][2:] for line in comparisons.splitlines() if line.startswith("- ")] == pairs * 2
    assert "1 seed: no run-to-run spread measured" in summary
    for section in (
        "## Calibration, prediction sets and operating points",
        "## Subgroups",
        "## External validation\n",
        f"### shifted\n\n{TINY_DEMO['synthetic']['external']} films from `data_external`",
    ):
        assert section in summary


def test_the_demo_scores_the_pixel_shortcut_and_every_model_with_the_lungs_hidden(demo_project):
    """The pixel shortcut as a network is scored (val, test, the external set, CIs, per class, headline), and a
    `lungs_hidden` block in every model's metrics that recomputes from its predictions with the lungs hidden."""
    from stages.lib.results.evaluation import read_predictions
    from stages.lib.results.metrics import split_metrics

    demo, classes = demo_project / "demo", list(CLASS_NAMES)
    px = json.loads((demo / "metrics" / "pixel_shortcut.json").read_text())
    assert px["chosen"] in px["val_macro_f1_of_each_candidate"] and px["hide_lungs"]["top"] == 0.05
    for split in ("val", "test"):
        names, labels, probs = read_predictions(demo / "predictions" / "pixel_shortcut" / f"{split}.csv", classes)
        assert (
            len(names) == TINY_DEMO["synthetic"][split]
            and px[split]["macro_f1"] == split_metrics(labels, probs, classes, 0)["macro_f1"]
        )
        low, high = px[split]["macro_f1_ci95"]
        assert low <= px[split]["macro_f1"] <= high and set(px[split]["per_class"]) == set(classes)
    assert px["external"]["shifted"]["per_class"]["COVID-19"]["absent"]
    assert (demo / "predictions" / "pixel_shortcut" / "external" / "shifted.csv").is_file()
    head = json.loads((demo / "metrics" / "headline" / "pixel_shortcut.json").read_text())
    assert head == {s: {"macro_f1": px[s]["macro_f1"]} for s in ("val", "test")}
    summary = (demo / "metrics" / "summary.md").read_text()
    hidden_section = summary.split("## Lungs hidden")[1].split("\n## ")[0]
    for name in [*TINY_DEMO["backbones"], "ensemble"]:
        m = json.loads((demo / "metrics" / f"{name}.json").read_text())
        b = m["lungs_hidden"]
        assert b["split"] == "test" and b["macro_f1_with_lungs"] == m["test"]["macro_f1"]
        assert set(b["per_class"]) == set(classes) and b["keep_at_least"] == 0.5
        assert f"| {name} | " in hidden_section and f"{b['macro_f1']:.3f} [" in hidden_section
        if name != "ensemble":  # one run: the block is its own hidden predictions, scored
            run = json.loads((demo / run_paths(name)["metrics"]).read_text())["lungs_hidden"]
            folder = demo / run_paths(name)["predictions"]
            _, labels, hidden = read_predictions(folder / "lungs_hidden" / "test.csv", classes)
            assert run["macro_f1"] == split_metrics(labels, hidden, classes, 0)["macro_f1"] == b["macro_f1"]
            recalls = {c: v["recall"] for c, v in split_metrics(labels, hidden, classes, 0)["per_class"].items()}
            assert {c: v["recall"] for c, v in run["per_class"].items()} == recalls


def test_dvc_reads_the_demo_in_a_terminal_and_reruns_only_what_changed(demo_project, tmp_path, monkeypatch):
    import yaml

    from tools.code_deps import code_files, stage_modules

    demo = demo_project / "demo"
    # As a user would, with Python writing __pycache__ (tests/conftest.py): the README's predict and export
    # import the whole package, then a second `make demo` runs no stage. The bytecode `make demo` left goes
    # first, so what is there after is theirs: runners.py (predict) and onnx_files.py (export), which no stage
    # imports, so no `dvc repro` wrote theirs.
    pipeline = yaml.safe_load((demo / "dvc.yaml").read_text())
    stage_code = {f for m in stage_modules(pipeline).values() for f in code_files(m, demo_project)}
    only_theirs = {"runners": "stages/lib/model/runners.py", "onnx_files": "stages/lib/model/onnx_files.py"}
    assert stage_code and stage_code.isdisjoint(only_theirs.values())
    for cache in list((demo_project / "stages").rglob("__pycache__")):
        shutil.rmtree(cache)
    for argv in [*readme_commands("cxr4-predict ")[:1], *readme_commands("cxr4-export ")]:
        argv[argv.index("--out") + 1] = str(tmp_path / Path(argv[argv.index("--out") + 1]).name)
        run(argv, demo_project)
    for module, path in only_theirs.items():
        assert list((demo_project / path).parent.glob(f"__pycache__/{module}.*.pyc")), f"no bytecode of {path}"
    again = run(["make", "demo", f"VENV={Path(sys.executable).parent.parent}", "STAMP="], demo_project).stdout
    assert stages_run(again) == set() and "didn't change, skipping" in again
    assert "Data and pipelines are up to date" in run(["dvc", "status"], demo).stdout

    shown = run(["dvc", "metrics", "show"], demo).stdout
    assert max(len(line) for line in shown.splitlines()) <= 200
    rows = {line.split()[0]: line.split()[1:] for line in shown.splitlines()[1:]}
    assert set(rows) == {
        f"metrics/headline/{n}.json"
        for n in ("data", "shortcut", "pixel_shortcut", "ensemble", *TINY_DEMO["backbones"])
    }
    assert shown.split()[:7] == [
        "Path",
        "best_epoch",
        "images",
        "test.accuracy",
        "test.macro_auroc",
        "test.macro_f1",
        "val.macro_f1",
    ]

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
    downstream = (
        {"ensemble", "report"}
        | {f"combine@{b}" for b in backbones}
        | {f"{s}@{b}-42" for s in ("train", "evaluate") for b in backbones}
    )
    lr = run(["dvc", "exp", "run", "-S", "train.lr=1e-4"], demo).stdout
    assert "Stage 'preprocess' didn't change, skipping" in lr
    assert stages_run(lr) == downstream
    clahe = run(["dvc", "exp", "run", "-S", "preprocess.clahe_clip_limit=2.0"], demo).stdout
    # the external set is preprocessed alike; the pixel shortcut refitted on the new cache
    assert stages_run(clahe) == {"preprocess", "external@shifted", "pixel_shortcut"} | downstream

    # A second seed runs only its own train and evaluate stages, then combines: each backbone's result is
    # now its two-seed ensemble, with the seeds' spread beside it.
    more = run(["dvc", "exp", "run", "-S", "seeds=[42,2]"], demo).stdout
    assert stages_run(more) == (
        {"ensemble", "report"}
        | {f"combine@{b}" for b in backbones}
        | {f"{s}@{b}-2" for s in ("train", "evaluate") for b in backbones}
    )
    m = json.loads((demo / "metrics" / "resnet18.json").read_text())
    assert m["seeds"]["n"] == 2 and set(m["seeds"]["runs"]) == {"42", "2"} and "note" not in m["seeds"]
    head = json.loads((demo / "metrics" / "headline" / "resnet18.json").read_text())
    assert head["test"]["macro_f1_sd"] == m["seeds"]["sd"]["test"]["macro_f1"] > 0
    assert json.loads((demo / "metrics" / "ensemble.json").read_text())["members"] == [
        f"{b}/seed{s}" for b in backbones for s in (42, 2)
    ]

    # The README's compact comparison of experiments fits a 200-column terminal.
    command = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("dvc exp show"))
    monkeypatch.setenv("COLUMNS", "1000")
    table = run([*shlex.split(command), "--no-pager"], demo).stdout.splitlines()
    assert max(len(line.rstrip()) for line in table) <= 200
    assert "ensemble.json:test.macro_f1" in table[1] and "train.lr" in table[1] and len(table) >= 6


def edit_probes(root: Path) -> list[str]:
    """One module of every room of stages/lib, of stages/ itself and of tools/ (the first by name that is not
    a package's __init__), and the ONNX exporter, which no stage of the pipeline runs."""
    rooms = sorted(p.parent for p in (root / "stages" / "lib").glob("*/__init__.py"))
    folders = [root / "stages", root / "tools", *rooms]
    firsts = [min(p for p in folder.glob("*.py") if p.name != "__init__.py") for folder in folders]
    exporter = next((root / "stages" / "lib").rglob("onnx_files.py"))
    return sorted({p.relative_to(root).as_posix() for p in [*firsts, exporter]})


def test_an_edit_to_a_module_reruns_exactly_the_stages_whose_command_imports_it(demo_project, tmp_path):
    """`dvc status` after a comment line is appended to one module: in demo/, the stages whose command
    imports it (directly or not, read from the imports, not from dvc.yaml) and no other; at the top level
    (never run), DVC's own reading of dvc.yaml gives each stage those files as its code deps."""
    from dvc.repo import Repo

    from tools.code_deps import code_files

    proj = tmp_path / "proj"
    shutil.copytree(demo_project, proj, symlinks=True)

    def imports(repo) -> dict[str, set[str]]:
        commands = {s.addressing: re.search(r"python -m ([\w.]+)", s.cmd or "") for s in repo.index.stages}
        return {name: code_files(m.group(1), proj) for name, m in commands.items() if m}  # not sources/*.dvc

    with Repo(str(proj)) as top:
        for stage in (s for s in top.index.stages if s.addressing in imports(top)):
            listed = {Path(d.fs_path).relative_to(proj).as_posix() for d in stage.deps if d.def_path.endswith(".py")}
            assert listed == imports(top)[stage.addressing], stage.addressing
    with Repo(str(proj / "demo")) as repo:
        runs = imports(repo)
        assert repo.status() == {}
        probes = edit_probes(proj)
        assert "stages/lib/model/onnx_files.py" in probes and len(probes) >= 10
        for probe in probes:
            text = (proj / probe).read_text()
            (proj / probe).write_text(text + "# an edit\n")
            expected = {name for name, files in runs.items() if probe in files}
            assert set(repo.status()) == expected, probe
            (proj / probe).write_text(text)
        assert repo.status() == {}


def readme_commands(prefix: str) -> list[list[str]]:
    """The command lines of README.md that start with `prefix`, as argv."""
    return [shlex.split(line) for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(prefix)]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_readme_predict_and_export_commands_reproduce_evaluate_after_the_demo(demo_project, tmp_path):
    """README's quick start: after `make demo`, cxr4-predict on the demo's test films gives evaluate's
    probabilities (with the OOD columns evaluate's fitted score adds), the course's submission format,
    and, through the checked ONNX export, the same CSV from onnxruntime within 1e-4."""
    commands = readme_commands("cxr4-predict ")
    exports = readme_commands("cxr4-export ")
    assert len(commands) == 3 and commands[1][-1] == "--submission" and len(exports) == 1
    outs, said = [], []
    for argv in [*commands[:2], *exports, commands[2]]:  # the README's order: the export before its ONNX predict
        for flag in ("--out", "--model"):  # written beside the test, not into the shared demo run
            if argv[argv.index(flag) + 1].endswith((".csv", ".onnx")) and not argv[argv.index(flag) + 1].startswith(
                "demo"
            ):
                argv[argv.index(flag) + 1] = str(tmp_path / argv[argv.index(flag) + 1])
        out = run(argv, demo_project).stdout
        said.append((argv[argv.index("--model") + 1], out))
        assert (
            ("16 images classified" in out)
            if argv[0] == "cxr4-predict"
            else ("checked on 16 test films of demo/cache" in out and "same predicted class on all" in out)
        )
        outs.append(Path(argv[argv.index("--out") + 1]))
    demo = demo_project / "demo"
    torch_rows, onnx_rows = read_csv(outs[0]), read_csv(outs[3])
    assert list(torch_rows[0])[-2:] == ["ood_score", "ood_flag"] and list(onnx_rows[0]) == list(torch_rows[0])
    # evaluate's val fit beside the model is applied: temperature, the prediction set, the COVID-19 flag
    fitted = json.loads((demo / "models" / "resnet18" / "seed42.calibration.json").read_text())
    assert list(torch_rows[0])[-5:-2] == ["prob_COVID-19", "prediction_set", "flag_COVID-19"]
    ours = {r["filename"]: r for r in torch_rows}
    evaluated = (demo / run_paths("resnet18")["predictions"] / "test.csv").read_text().splitlines()[1:]
    assert len(ours) == len(evaluated) == 16
    for row in evaluated:
        name = row.split(",")[0]
        scaled = apply_temperature(np.array(row.split(",")[3:], float)[None], fitted["temperature"]["value"])[0]
        ours_probs = np.array([float(ours[name][f"prob_{c}"]) for c in CLASS_NAMES])
        np.testing.assert_allclose(ours_probs, scaled, atol=5e-5)  # from 6-digit CSV
        expected_set = [c for c, p in zip(CLASS_NAMES, scaled) if 1 - p <= fitted["conformal_threshold"] + 1e-9]
        assert ours[name]["prediction_set"].split("|") == expected_set or (
            not expected_set and ours[name]["prediction_set"] == ""
        )
        assert ours[name]["flag_COVID-19"] == str(int(scaled[3] >= fitted["operating_points"]["COVID-19"]["threshold"]))
    # the last line names the fit applied and where it was read: beside the checkpoint, or inside the ONNX file
    (pt, torch_said), (onnx, onnx_said) = said[0], said[3]
    assert pt.endswith(".pt") and onnx.endswith(".onnx") and onnx == str(outs[2])
    assert f"({posthoc.describe(fitted, str(posthoc.sidecar_path(pt)))}) -> " in torch_said
    assert f"({posthoc.describe(fitted, onnx)}) -> " in onnx_said
    # onnxruntime: the same rows, every number within 1e-4 of torch's, the same classes, sets and flags
    for t, o in zip(torch_rows, onnx_rows):
        same = ("filename", "predicted_label", "prediction_set", "flag_COVID-19", "ood_flag")
        assert [t[k] for k in same] == [o[k] for k in same]
        numbers = [k for k in t if k.startswith("prob_")] + ["ood_score"]
        np.testing.assert_allclose([float(o[k]) for k in numbers], [float(t[k]) for k in numbers], atol=1e-4)

    lines = outs[1].read_text().splitlines()
    assert lines[0] == "new_filename,normal,bacteria,virus,COVID-19" and len(lines) == 17
    assert all(sorted(line.split(",")[1:]) == ["0", "0", "0", "1"] for line in lines[1:])
    assert [line.split(",")[0] for line in lines[1:]] == list(ours)


@pytest.mark.slow
def test_stage_errors_are_one_line_with_exit_code_2(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", None, TINY, git=False)
    missing = run(stage_cmd("preprocess"), proj, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "data folder data not found" in missing.stderr

    # A backbone without a registry record is refused when params load, before any stage works.
    (proj / "params.yaml").write_text((proj / "params.yaml").read_text().replace("- efficientnet_b0", "- vgg16"))
    bad = run(stage_cmd("train", "vgg16"), proj, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"error: params.yaml: backbones lists 'vgg16', which has no record in {REGISTRY} (records: "
        f"{', '.join(BACKBONES)}); add its record there or remove the name"
    )
    assert not (proj / "models").exists()


@pytest.mark.slow
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

    run(stage_cmd("pixel_shortcut"), proj)  # evaluate's card compares the model with both shortcuts
    run(stage_cmd("train", "resnet18"), proj)
    run(stage_cmd("evaluate", "resnet18"), proj)
    run(stage_cmd("combine", "resnet18"), proj)
    m = json.loads((proj / "metrics" / "resnet18.json").read_text())
    assert all(m["test"]["per_class"][c]["support"] == 10 for c in ("normal", "bacteria", "virus", "COVID-19"))
    # split-conformal sets on real films: the test coverage's 95% CI holds 1 - alpha (0.925 [0.825, 1.0] here)
    low, high = m["coverage"]["test"]["coverage_ci95"]
    assert m["coverage"]["alpha"] == 0.1 and low <= 0.9 <= high
    history = (proj / run_paths("resnet18")["live"] / "plots" / "metrics" / "val" / "macro_f1.tsv").read_text()
    assert history.splitlines()[0] == "step\tmacro_f1" and len(history.splitlines()) == 2

    # The sample's SOURCES.csv names each film's licence: the data report counts them, the model card prints them.
    licences = json.loads((proj / "metrics" / "data_report.json").read_text())["licences"]
    assert sum(licences.values()) == 240 and [k[:9] for k in licences] == ["CC-BY-4.0", "CC-BY-3.0"]
    card = (proj / "models" / "resnet18" / "seed42.card.md").read_text()
    assert "; ".join(f"{k}: {v}" for k, v in licences.items()) in card

    run(stage_cmd("ensemble"), proj)
    run(stage_cmd("report"), proj)
    summary = (proj / "metrics" / "summary.md").read_text()
    pixel = json.loads((proj / "metrics" / "pixel_shortcut.json").read_text())
    assert "## Shortcut audit" in summary
    for name, m in (("shortcut", shortcut), ("pixel_shortcut", pixel)):  # the data report rounds to 4 decimals
        shown = re.search(rf"^- `{name}`: .* Its test macro-F1: \*\*([\d.]+)\*\*", summary, re.MULTILINE).group(1)
        assert abs(float(shown) - m["test"]["macro_f1"]) <= 5e-4 + 1e-9
    # the warning follows the paired comparison with the stronger shortcut (comparisons.beats), both ways
    best = max((("shortcut", shortcut), ("pixel_shortcut", pixel)), key=lambda n_m: n_m[1]["test"]["macro_f1"])[0]
    paired = re.search(rf"^- (resnet18 − {best} = .*)$", summary, re.MULTILINE).group(1)  # macro-F1's list is first
    warned = f"WARNING: resnet18 does not clearly beat the stronger shortcut, `{best}`" in summary
    assert warned != paired.endswith(": resnet18 better") and (not warned or paired in summary.split("## Seeds")[0])


@pytest.mark.slow
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


def test_the_demo_scores_its_shifted_external_set_with_absent_classes_absent(demo_project):
    """external@shifted: the demo's shifted films (no COVID-19) in their own cache, scored by every run,
    seed ensemble and the ensemble as test (their metrics' block `external`), and the summary's table
    beside the internal test: every number in it is the metrics file's."""
    demo = demo_project / "demo"
    summary = (demo / "metrics" / "summary.md").read_text()
    section = summary.split("## External validation")[1].split("\n## ")[0]
    assert "Absent here: COVID-19" in section
    runs = ["resnet18/seed42", "efficientnet_b0/seed42"]
    for name in [*runs, "resnet18", "efficientnet_b0", "ensemble"]:
        m = json.loads((demo / "metrics" / f"{name}.json").read_text())["external"]["shifted"]
        assert m["n"] == TINY_DEMO["synthetic"]["external"] == sum(m["counts"].values())
        assert m["absent_classes"] == ["COVID-19"] and m["counts"]["COVID-19"] == 0
        assert m["per_class"]["COVID-19"]["absent"] and m["per_class"]["COVID-19"]["recall"] is None
        low, high = m["macro_f1_ci95"]
        assert low <= m["macro_f1"] <= high
        d = m["drop"]
        assert d["drop"] == pytest.approx(d["test_macro_f1"] - m["macro_f1"])
        assert d["drop_ci95"][0] <= d["drop"] <= d["drop_ci95"][1]
        ece, cov = m["temperature"]["ece"], m["coverage"]
        share = f"{m['ood']['flagged']:.1%}" if name in runs else "n/a"
        assert (
            f"| {name} | {d['test_macro_f1']:.3f} | {m['macro_f1']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{d['drop']:.3f} [{d['drop_ci95'][0]:.3f}, {d['drop_ci95'][1]:.3f}] | {ece['before']:.3f} → "
            f"{ece['after']:.3f} | {cov['coverage']:.3f} [{cov['coverage_ci95'][0]:.3f}, {cov['coverage_ci95'][1]:.3f}]"
            f" | {share} |"
        ) in section
        recall = " | ".join(f"{v['recall']:.3f}" for c, v in m["per_class"].items() if c != "COVID-19")
        assert (
            f"| {name} | {recall} | absent ({m['per_class']['COVID-19']['predicted_as']} called COVID-19) |" in section
        )
    # the OOD flag's shares: on test and on the external set, per run, as its metrics file holds them
    ood = summary.split("## Out-of-distribution flag")[1].split("\n## ")[0]
    assert "| Run | val | test | external/shifted |" in ood
    for run_name in runs:
        m = json.loads((demo / "metrics" / f"{run_name}.json").read_text())
        shares = m["ood"]["flagged"]
        assert shares["external/shifted"] == m["external"]["shifted"]["ood"]["flagged"]
        assert f"| {run_name} | {shares['val']:.1%} | {shares['test']:.1%} | {shares['external/shifted']:.1%} |" in ood
    rows = (
        (demo / "predictions" / "resnet18" / "seeds" / "seed42" / "external" / "shifted.csv").read_text().splitlines()
    )
    assert len(rows) == 1 + TINY_DEMO["synthetic"]["external"]
