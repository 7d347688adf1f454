"""`data.classes`: any label set trains, evaluates, plots and predicts; a label outside it is refused."""

import json

import numpy as np
import pytest
import torch

from helpers import TINY, make_project, merge, preprocess, run, run_paths, stage_cmd, write_xray
from stages.lib.core.errors import UserError
from stages.lib.data.layouts import read_layout

KAGGLE = (
    "chest_xray/train/NORMAL/IM-0001-0001.jpeg",
    "chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg",
    "chest_xray/train/PNEUMONIA/person2_virus_2.jpeg",
)


def kaggle_tree(root, per_split=(("train", 6), ("val", 2), ("test", 2))):
    """A small Kaggle 'Chest X-Ray Images (Pneumonia)' tree: NORMAL and PNEUMONIA (bacteria and virus) films."""
    seed = 0
    for split, n in per_split:
        for _ in range(n):
            for folder, stem in (
                ("NORMAL", f"IM-{seed:04d}-0001"),
                ("PNEUMONIA", f"person{seed}_bacteria_1"),
                ("PNEUMONIA", f"person{seed + 1}_virus_1"),
            ):
                seed += 2
                write_xray(root / "chest_xray" / split / folder / f"{stem}.png", seed)
    return root


@pytest.mark.parametrize(
    "classes,labels",
    [
        (["normal", "bacteria", "virus"], [0, 1, 2]),
        (["normal", "pneumonia"], [0, 1, 1]),  # PNEUMONIA by folder, whatever the file name says
        (["pneumonia", "normal"], [1, 0, 0]),  # the order of data.classes is the order of every output
    ],
)
def test_kaggle_labels_follow_data_classes(tmp_path, classes, labels):
    for rel in KAGGLE:
        write_xray(tmp_path / rel, 1)
    samples = read_layout(tmp_path, "kaggle-pneumonia", classes)["train"]
    assert {s.name: s.label for s in samples} == dict(zip(KAGGLE, labels))


def test_a_label_outside_data_classes_is_refused_naming_the_file(tmp_path):
    for rel in KAGGLE:
        write_xray(tmp_path / rel, 1)
    write_xray(tmp_path / "covid19" / "c1.png", 2)
    with pytest.raises(
        UserError,
        match=r"covid19/c1.png: label 'COVID-19' is not one of data.classes \(normal, "
        r"bacteria, virus\); add it to data.classes or move .*covid19 out of",
    ):
        read_layout(tmp_path, "kaggle-pneumonia", ["normal", "bacteria", "virus"])
    with pytest.raises(
        UserError,
        match=r"person1_bacteria_1.jpeg: label 'bacteria' is not one of data.classes "
        r"\(normal, virus\)",
    ):
        read_layout(tmp_path, "kaggle-pneumonia", ["normal", "virus"])


def test_the_study_classes_on_kaggle_data_name_the_missing_class(tmp_path, monkeypatch, capsys):
    kaggle_tree(tmp_path / "data")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 2 and err == (
        "error: data: no training image of class 'COVID-19'; every class needs some (add "
        "images of it to the training split, or remove it from data.classes)"
    )
    code, err = preprocess(tmp_path, monkeypatch, capsys, classes=["normal", "bacteria", "virus"])
    assert code == 0 and json.loads((tmp_path / "cache/meta.json").read_text())["classes"] == [
        "normal",
        "bacteria",
        "virus",
    ]


@pytest.mark.slow
def test_two_classes_train_evaluate_report_and_predict(tmp_path):
    """Kaggle's NORMAL/PNEUMONIA as two classes, through every stage: outputs keep their shape over them."""
    proj = make_project(
        tmp_path / "proj",
        kaggle_tree(tmp_path / "kaggle"),
        merge(TINY, {"data": {"classes": ["normal", "pneumonia"]}, "backbones": ["resnet18"]}),
        git=False,
    )
    out = {
        name: run(stage_cmd(name, "resnet18"), proj).stdout
        for name in ("preprocess", "pixel_shortcut", "train", "evaluate", "combine", "ensemble", "report")
    }
    assert "train: 18 images normal 6, pneumonia 12" in out["preprocess"]
    meta = torch.load(proj / run_paths("resnet18")["model"], weights_only=True)["meta"]
    assert meta["classes"] == ["normal", "pneumonia"]
    # where it ran: the first line of train and evaluate, the checkpoint and the DVCLive summary
    assert out["train"].startswith("resnet18: runs on cpu (") and out["evaluate"].startswith("resnet18: runs on cpu (")
    live = json.loads((proj / run_paths("resnet18")["live"] / "metrics.json").read_text())
    assert live["runtime"] == meta["runtime"] and meta["runtime"]["device"] == "cpu"
    assert meta["runtime"]["precision"] == "fp32" and "needs CUDA" in meta["runtime"]["note"]
    for name in ("resnet18", "ensemble"):
        m = json.loads((proj / f"metrics/{name}.json").read_text())
        assert (
            list(m["test"]["per_class"]) == ["normal", "pneumonia"]
            and m["test"]["per_class"]["pneumonia"]["support"] == 4
        )
    header = (proj / "predictions/resnet18/test.csv").read_text().splitlines()[0]
    assert header == "filename,true_label,predicted_label,prob_normal,prob_pneumonia"
    summary = (proj / "metrics/summary.md").read_text()
    assert "| resnet18 | pneumonia |" in summary and "Study acc" not in summary  # the study had 4 classes

    run(
        [
            "python",
            "-m",
            "stages.predict",
            "--model",
            run_paths("resnet18")["model"],
            "--images",
            "data/chest_xray/test/NORMAL",
            "--out",
            "new.csv",
            "--submission",
        ],
        proj,
    )
    rows = (proj / "new.csv").read_text().splitlines()
    assert rows[0] == "new_filename,normal,pneumonia" and len(rows) == 3
    assert all(sorted(r.split(",")[1:]) == ["0", "1"] for r in rows[1:])
    probs = np.array(
        [
            [float(v) for v in r.split(",")[3:]]
            for r in (proj / "predictions/resnet18/test.csv").read_text().splitlines()[1:]
        ]
    )
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
