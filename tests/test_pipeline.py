"""The whole DVC pipeline on tiny settings in a temporary copy of the project."""
import json

import numpy as np

from conftest import TINY, make_project, run

CONTRACT_SPLIT = {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_writes_contract_metrics_plots_and_reruns_only_what_changed(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", tiny_data, TINY)
    first = run(["dvc", "repro"], proj)
    backbones = TINY["train"]["backbones"]
    assert stages_run(first.stdout) == {"preprocess", "report"} | {f"{s}@{b}" for s in ("train", "evaluate") for b in backbones}

    for b in backbones:
        m = json.loads((proj / "metrics" / f"{b}.json").read_text())
        assert set(m) >= {"val", "test", "best_epoch", "epochs_run"}
        for split in ("val", "test"):
            assert set(m[split]) >= CONTRACT_SPLIT
            assert sum(c["support"] for c in m[split]["per_class"].values()) == 12
            assert 0 <= m[split]["macro_f1"] <= 1
        assert m["best_epoch"] == 1 and m["epochs_run"] == 1
        preds = (proj / "predictions" / b / "test.csv").read_text().splitlines()
        assert preds[0] == "filename,true_label,predicted_label,prob_normal,prob_bacteria,prob_virus,prob_COVID-19"
        probs = np.array([[float(v) for v in row.split(",")[3:]] for row in preds[1:]])
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    for png in ("confusion_test.png", "confusion_val.png", "training_curves.png", "comparison.png"):
        assert (proj / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (proj / "metrics" / "summary.md").read_text()
    assert "SYNTHETIC" in summary and all(f"| {b} | test |" in summary for b in backbones)

    assert "Data and pipelines are up to date" in run(["dvc", "status"], proj).stdout
    assert stages_run(run(["dvc", "repro"], proj).stdout) == set()
    shown = run(["dvc", "metrics", "show"], proj).stdout
    assert all(f"metrics/{b}.json" in shown for b in backbones)
    header, data_row = [line.split() for line in shown.splitlines()
                        if line.startswith(("Path", "metrics/data_report.json"))]
    counts = {k: v for k, v in zip(header, data_row) if k.startswith("counts.")}
    assert counts == {f"counts.{s}.{c}": str(n) for s, n in (("train", 8), ("val", 3), ("test", 3))
                      for c in ("COVID-19", "bacteria", "normal", "virus")}
    run(["dvc", "plots", "show", "-o", "plots_html"], proj)
    assert "resnet18 test confusion" in (proj / "plots_html" / "index.html").read_text()

    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "first run"], proj)
    lr = run(["dvc", "exp", "run", "-S", "train.lr=1e-4"], proj).stdout
    assert "Stage 'preprocess' didn't change, skipping" in lr
    assert stages_run(lr) == {"report"} | {f"{s}@{b}" for s in ("train", "evaluate") for b in backbones}

    clahe = run(["dvc", "exp", "run", "-S", "preprocess.clahe_clip_limit=2.0"], proj).stdout
    assert stages_run(clahe) == stages_run(first.stdout)


def test_stage_errors_are_one_line_with_exit_code_2(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", None, {**TINY, "train": {**TINY["train"], "backbones": ["vgg16"]}},
                        git=False)
    missing = run(["python", "-m", "stages.preprocess", "--data", "nowhere", "--out", "cache", "--report", "r.json"],
                  proj, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "data folder nowhere not found" in missing.stderr

    (proj / "cache").mkdir()
    (proj / "cache" / "meta.json").write_text('{"classes": [], "counts": {"train": {}}, "preprocess": {}}')
    bad = run(["python", "-m", "stages.train", "--backbone", "vgg16", "--cache", "cache",
               "--model", "models/vgg16.pt", "--live", "dvclive/vgg16", "--resume", "checkpoints/vgg16.pt"], proj, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: unknown backbone 'vgg16'; train.backbones allows resnet18, densenet121, efficientnet_b0, convnext_tiny")
    assert not (proj / "models").exists()


def test_real_xrays_preprocess_train_and_evaluate(tmp_path, real_data):
    proj = make_project(tmp_path / "proj", None, TINY, git=False)
    out = run(["python", "-m", "stages.preprocess", "--data", str(real_data), "--out", "cache", "--report",
               "metrics/data_report.json"], proj).stdout
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

    run(["python", "-m", "stages.train", "--backbone", "resnet18", "--cache", "cache",
         "--model", "models/resnet18.pt", "--live", "dvclive/resnet18", "--resume", "checkpoints/resnet18.pt"], proj)
    run(["python", "-m", "stages.evaluate", "--backbone", "resnet18", "--cache", "cache", "--model",
         "models/resnet18.pt", "--metrics", "metrics/resnet18.json", "--predictions", "predictions/resnet18"], proj)
    m = json.loads((proj / "metrics" / "resnet18.json").read_text())
    assert all(m["test"]["per_class"][c]["support"] == 10 for c in ("normal", "bacteria", "virus", "COVID-19"))
    history = (proj / "dvclive" / "resnet18" / "plots" / "metrics" / "val" / "macro_f1.tsv").read_text()
    assert history.splitlines()[0] == "step\tmacro_f1" and len(history.splitlines()) == 2
