"""The whole DVC pipeline on tiny settings in a temporary copy of the project."""
import json
import shutil

import numpy as np

from conftest import TINY, make_project, merge, run

CONTRACT_SPLIT = {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}
NEW_KEYS = {"balanced_accuracy", "weighted_f1", "weighted_precision", "weighted_recall", "macro_auroc",
            "accuracy_ci95", "macro_f1_ci95", "macro_auroc_ci95", "ece", "reliability"}
PNG = b"\x89PNG\r\n\x1a\n"


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_writes_contract_metrics_plots_and_reruns_only_what_changed(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", tiny_data, TINY)
    first = run(["dvc", "repro"], proj)
    backbones = TINY["backbones"]
    downstream = {"ensemble", "report"} | {f"{s}@{b}" for s in ("train", "evaluate") for b in backbones}
    assert stages_run(first.stdout) == {"preprocess"} | downstream

    for name in backbones + ["ensemble"]:
        m = json.loads((proj / "metrics" / f"{name}.json").read_text())
        for split in ("val", "test"):
            assert set(m[split]) >= CONTRACT_SPLIT | NEW_KEYS
            assert sum(c["support"] for c in m[split]["per_class"].values()) == 12
            for key in ("accuracy", "macro_f1", "macro_auroc"):
                low, high = m[split][f"{key}_ci95"]
                assert 0 <= low <= m[split][key] <= high <= 1
            assert all(0 <= c["auroc"] <= 1 for c in m[split]["per_class"].values())
            assert 0 <= m[split]["ece"] <= 1 and len(m[split]["reliability"]) == 15
        folder = proj / ("ensemble" if name == "ensemble" else f"predictions/{name}")
        preds = (folder / "test.csv").read_text().splitlines()
        assert preds[0] == "filename,true_label,predicted_label,prob_normal,prob_bacteria,prob_virus,prob_COVID-19"
        probs = np.array([[float(v) for v in row.split(",")[3:]] for row in preds[1:]])
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
        assert (folder / "roc_test" / "normal.csv").read_text().startswith("fpr,tpr\n")
        if name != "ensemble":
            assert m["best_epoch"] == 1 and m["epochs_run"] == 1
            assert (proj / "plots" / "gradcam" / f"{name}.png").read_bytes()[:8] == PNG
    for png in ("confusion_test.png", "confusion_val.png", "training_curves.png", "training_curves_overlay.png",
                "comparison.png", "roc_test.png", "pr_test.png", "reliability_test.png"):
        assert (proj / "plots" / png).read_bytes()[:8] == PNG
    summary = (proj / "metrics" / "summary.md").read_text()
    assert "SYNTHETIC" in summary and all(f"| {b} | test |" in summary for b in backbones + ["ensemble"])
    ens = json.loads((proj / "metrics" / "ensemble.json").read_text())
    assert f"| ensemble | test | {ens['test']['accuracy']:.3f} [" in summary

    assert "Data and pipelines are up to date" in run(["dvc", "status"], proj).stdout
    assert stages_run(run(["dvc", "repro"], proj).stdout) == set()
    shown = run(["dvc", "metrics", "show"], proj).stdout
    assert all(f"metrics/{b}.json" in shown for b in backbones + ["ensemble"])
    header, data_row = [line.split() for line in shown.splitlines()
                        if line.startswith(("Path", "metrics/data_report.json"))]
    counts = {k: v for k, v in zip(header, data_row) if k.startswith("counts.")}
    assert counts == {f"counts.{s}.{c}": str(n) for s, n in (("train", 8), ("val", 3), ("test", 3))
                      for c in ("COVID-19", "bacteria", "normal", "virus")}
    run(["dvc", "plots", "show", "-o", "plots_html"], proj)
    page = (proj / "plots_html" / "index.html").read_text()
    assert "resnet18 test confusion" in page and "resnet18 test ROC" in page

    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "first run"], proj)
    lr = run(["dvc", "exp", "run", "-S", "train.lr=1e-4"], proj).stdout
    assert "Stage 'preprocess' didn't change, skipping" in lr
    assert stages_run(lr) == downstream

    clahe = run(["dvc", "exp", "run", "-S", "preprocess.clahe_clip_limit=2.0"], proj).stdout
    assert stages_run(clahe) == stages_run(first.stdout)


def test_predict_reproduces_evaluate_and_writes_the_course_submission(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", tiny_data, merge(TINY, {"backbones": ["resnet18"]}))
    run(["dvc", "repro", "evaluate@resnet18"], proj)
    images = tmp_path / "new_images"
    images.mkdir()
    for f in (proj / "data" / "test_images").iterdir():
        (images / f.name).write_bytes(f.read_bytes())
    (images / "notes.txt").write_text("not an image")

    out = run(["python", "-m", "stages.predict", "--model", "models/resnet18.pt", "--images", str(images),
               "--out", "new.csv"], proj)
    assert "skipped" in out.stderr and "notes.txt" in out.stderr
    ours = {r.split(",")[0]: np.array(r.split(",")[2:], float) for r in (proj / "new.csv").read_text().splitlines()[1:]}
    evaluated = (proj / "predictions" / "resnet18" / "test.csv").read_text().splitlines()[1:]
    assert len(ours) == len(evaluated) == 12
    for row in evaluated:
        name = row.split(",")[0]
        np.testing.assert_allclose(ours[name], np.array(row.split(",")[3:], float), atol=1e-5)

    run(["python", "-m", "stages.predict", "--model", "models/resnet18.pt", "--images", str(images),
         "--out", "submission.csv", "--submission"], proj)
    lines = (proj / "submission.csv").read_text().splitlines()
    assert lines[0] == "new_filename,normal,bacteria,virus,COVID-19" and len(lines) == 13
    assert all(sorted(line.split(",")[1:]) == ["0", "0", "0", "1"] for line in lines[1:])


def test_stage_errors_are_one_line_with_exit_code_2(tmp_path, tiny_data):
    proj = make_project(tmp_path / "proj", None, TINY, git=False)
    missing = run(["python", "-m", "stages.preprocess", "--data", "nowhere", "--out", "cache", "--report", "r.json"],
                  proj, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "data folder nowhere not found" in missing.stderr

    # A backbone without a registry record is refused when params load, before any stage works.
    (proj / "params.yaml").write_text((proj / "params.yaml").read_text().replace("- efficientnet_b0", "- vgg16"))
    bad = run(["python", "-m", "stages.train", "--backbone", "vgg16", "--cache", "cache",
               "--model", "models/vgg16.pt", "--live", "dvclive/vgg16", "--resume", "checkpoints/vgg16.pt"], proj, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: params.yaml: backbones lists 'vgg16', which has no record in stages/lib/models.py (records: "
        "resnet18, densenet121, efficientnet_b0, convnext_tiny); add its record there or remove the name")
    assert not (proj / "models").exists()


def test_real_xrays_preprocess_train_and_evaluate(tmp_path, real_data):
    proj = make_project(tmp_path / "proj", None, merge(TINY, {"backbones": ["resnet18"]}), git=False)
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
         "models/resnet18.pt", "--metrics", "metrics/resnet18.json", "--predictions", "predictions/resnet18",
         "--gradcam", "plots/gradcam/resnet18.png"], proj)
    m = json.loads((proj / "metrics" / "resnet18.json").read_text())
    assert all(m["test"]["per_class"][c]["support"] == 10 for c in ("normal", "bacteria", "virus", "COVID-19"))
    history = (proj / "dvclive" / "resnet18" / "plots" / "metrics" / "val" / "macro_f1.tsv").read_text()
    assert history.splitlines()[0] == "step\tmacro_f1" and len(history.splitlines()) == 2

    run(["python", "-m", "stages.ensemble", "--predictions", "predictions", "--cache-meta", "cache/meta.json",
         "--out", "ensemble", "--metrics", "metrics/ensemble.json"], proj)
    run(["python", "-m", "stages.report", "--predictions", "predictions", "--ensemble", "ensemble", "--live",
         "dvclive", "--cache-meta", "cache/meta.json", "--data-report", "metrics/data_report.json", "--plots",
         "plots", "--gradcam", "plots/gradcam", "--summary", "metrics/summary.md"], proj)
    summary = (proj / "metrics" / "summary.md").read_text()
    assert "## Shortcut audit" in summary and f"macro-F1 **{shortcut['test']['macro_f1']:.3f}**" in summary
    if m["test"]["macro_f1_ci95"][0] <= shortcut["test"]["macro_f1"]:  # a 1-epoch 32 px net should not beat it
        assert "WARNING: resnet18 does not clearly beat the metadata-only shortcut" in summary


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
    assert "| resnet18 | test | labels hidden |" in summary and "## Per class (val)" in summary
