"""The OOD flag: evaluate fits it beside each run (train stats, val threshold); `cxr4-predict` adds
ood_score and ood_flag; films that are not frontal chest X-rays are flagged, val films are not."""

import csv
import json
import shutil

from helpers import HEADER, run_predict
from stages.lib.data.synthetic import NOT_XRAYS, write_not_xrays


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_films_that_are_not_chest_xrays_are_flagged_and_val_films_are_not(demo_project, tmp_path, monkeypatch, capsys):
    demo = demo_project / "demo"
    model = demo / "models" / "resnet18" / "seed42.pt"
    fitted = json.loads(model.with_suffix(".ood.json").read_text())
    assert fitted["keep"] == 0.95 and fitted["flagged"]["val"] <= 0.05

    # Photos, noise, text and lateral views: at least 90% flagged.
    write_not_xrays(tmp_path / "not_xrays", per_kind=3, seed=1)
    code, _, _ = run_predict(
        ["--model", model, "--images", tmp_path / "not_xrays", "--out", tmp_path / "n.csv"], monkeypatch, capsys
    )
    rows = read_csv(tmp_path / "n.csv")
    assert code == 0 and list(rows[0])[-2:] == ["ood_score", "ood_flag"] and len(rows) == 3 * len(NOT_XRAYS)
    assert {r["ood_flag"] for r in rows} <= {"true", "false"}
    assert sum(r["ood_flag"] == "true" for r in rows) >= 0.9 * len(rows)
    assert all((float(r["ood_score"]) > fitted["threshold"]) == (r["ood_flag"] == "true") for r in rows)

    # The val films through cxr4-predict: the share evaluate recorded (the same films, the same score), <= 5%.
    code, _, _ = run_predict(
        ["--model", model, "--images", demo / "data" / "val_images", "--out", tmp_path / "v.csv"], monkeypatch, capsys
    )
    val = read_csv(tmp_path / "v.csv")
    assert code == 0 and sum(r["ood_flag"] == "true" for r in val) / len(val) == fitted["flagged"]["val"]

    # The summary reports the shares flagged on val and test, run by run.
    summary = (demo / "metrics" / "summary.md").read_text()
    assert (
        f"| resnet18/seed42 | {fitted['flagged']['val']:.1%} | {fitted['flagged']['test']:.1%} |"
        in summary.split("## Out-of-distribution flag")[1]
    )


def test_an_ood_flag_asked_for_without_a_fitted_score_is_refused(demo_project, tmp_path, monkeypatch, capsys):
    model = shutil.copy(demo_project / "demo" / "models" / "resnet18" / "seed42.pt", tmp_path / "seed42.pt")
    images = demo_project / "demo" / "data" / "val_images"
    code, _, err = run_predict(
        ["--model", model, "--images", images, "--out", tmp_path / "p.csv", "--ood"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        f"error: --ood: no fitted OOD score beside {model} ({tmp_path / 'seed42.ood.json'}); run evaluate (dvc repro)"
    )
    assert not (tmp_path / "p.csv").exists()
    code, _, _ = run_predict(["--model", model, "--images", images, "--out", tmp_path / "p.csv"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "p.csv").read_text().splitlines()[0] == HEADER  # no score, no OOD columns


def test_the_ood_columns_and_the_submission_format_do_not_mix(tmp_path, monkeypatch, capsys):
    code, _, err = run_predict(
        ["--model", "m.pt", "--images", tmp_path, "--out", "p.csv", "--ood", "--submission"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        "error: --ood and --submission do not go together: the course's submission format has no OOD columns; drop one"
    )
